// cuBLASLt matrix products for the linear layers; see gemm_cuda.h. The row-major product is run as
// the column-major product of the transposes (row_major_as_column_major). Per shape, the matmul
// descriptor, the layouts and the heuristic's first algorithm are built once and cached.
#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <type_traits>

#include "kernels/conv_cuda_layout.h"  // pointer_alignment_bytes
#include "kernels/cuda_check.h"
#include "kernels/gemm_cuda.h"

namespace kd {
namespace {

constexpr uint64_t kMaxWorkspaceBytes = uint64_t(32) << 20;  // NVIDIA's advice for Hopper
constexpr int64_t kMaxAlignment = 256;                       // cuBLASLt's default assumption

struct LtGemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulPreference_t preference = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace_bytes = 0;

  LtGemmPlan() = default;
  LtGemmPlan(const LtGemmPlan&) = delete;
  LtGemmPlan& operator=(const LtGemmPlan&) = delete;
  ~LtGemmPlan() {
    if (preference) cublasLtMatmulPreferenceDestroy(preference);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

// handle, device, trans_a, trans_b, m, n, k, lda, ldb, ldc, C is fp32, 3 alignments
using GemmKey = std::array<int64_t, 14>;

struct GemmCache {
  std::mutex mutex;
  std::map<GemmKey, std::unique_ptr<LtGemmPlan>> plans;
};

// Never destroyed: descriptors must not outlive cuBLASLt's own teardown at process exit.
GemmCache& gemm_cache() {
  static GemmCache* cache = new GemmCache;
  return *cache;
}

std::string describe(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
                     int64_t ldc, bool c_f32) {
  std::ostringstream o;
  o << "gemm_cuda C[" << m << "," << n << "] = A" << (trans_a ? "^T" : "") << " B" << (trans_b ? "^T" : "")
    << " k " << k << " (lda " << lda << ", ldb " << ldb << ", ldc " << ldc << "; bf16 x bf16 -> "
    << (c_f32 ? "fp32" : "bf16") << ")";
  return o.str();
}

std::unique_ptr<LtGemmPlan> build_plan(const CudaHandles& h, const ColumnMajorGemm& g, cudaDataType_t c_type,
                                       const int64_t align[3]) {
  auto p = std::make_unique<LtGemmPlan>();
  KD_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = g.a.transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = g.b.transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
  KD_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
  KD_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
  KD_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, uint64_t(g.a.rows), uint64_t(g.a.cols), g.a.ld));
  KD_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, uint64_t(g.b.rows), uint64_t(g.b.cols), g.b.ld));
  KD_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p->c, c_type, uint64_t(g.c.rows), uint64_t(g.c.cols), g.c.ld));

  KD_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&p->preference));
  KD_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p->preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                       &kMaxWorkspaceBytes, sizeof kMaxWorkspaceBytes));
  // align[] is indexed by our buffers A, B, C; cuBLAS's A is our B and its B our A.
  const uint32_t align_a = uint32_t(align[1]), align_b = uint32_t(align[0]), align_c = uint32_t(align[2]);
  KD_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p->preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                       &align_a, sizeof align_a));
  KD_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p->preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                       &align_b, sizeof align_b));
  KD_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p->preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                       &align_c, sizeof align_c));
  KD_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(p->preference, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                       &align_c, sizeof align_c));

  cublasLtMatmulHeuristicResult_t results[8] = {};
  int returned = 0;
  KD_CUBLAS_CHECK(cublasLtMatmulAlgoGetHeuristic(h.cublaslt, p->desc, p->a, p->b, p->c, p->c, p->preference, 8,
                                                 results, &returned));
  for (int i = 0; i < returned; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
    p->algo = results[i].algo;
    p->workspace_bytes = results[i].workspaceSize;
    return p;
  }
  KD_FAIL("cublasLtMatmulAlgoGetHeuristic found no algorithm (", returned, " results)");
}

// C = beta * C for an empty inner dimension (k == 0), as gemm_cpu does.
template <typename T>
__global__ void scale_kernel(int64_t m, int64_t n, float beta, T* c, int64_t ldc) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < m * n; i += int64_t(gridDim.x) * blockDim.x) {
    T& v = c[(i / n) * ldc + i % n];
    if constexpr (std::is_same<T, float>::value)
      v = beta == 0.0f ? 0.0f : beta * v;
    else
      v = float_to_bf16(beta == 0.0f ? 0.0f : beta * bf16_to_float(v));
  }
}

template <typename C>
void gemm_lt(const CudaHandles& h, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
             const bf16* a, int64_t lda, const bf16* b, int64_t ldb, float beta, C* c, int64_t ldc) {
  constexpr bool c_f32 = std::is_same<C, float>::value;
  try {
    const char* bad = nullptr;
    KD_CHECK(m >= 0 && n >= 0 && k >= 0, "negative size");
    KD_CHECK(gemm_leading_dims_ok(trans_a, trans_b, m, n, k, lda, ldb, ldc, &bad), bad, " too small");
    if (m == 0 || n == 0) return;
    if (k == 0) {
      const int64_t blocks = std::min<int64_t>(ceil_div(m * n, 256), int64_t(std::max(h.sm_count, 1)) * 8);
      scale_kernel<C><<<unsigned(blocks), 256, 0, h.stream>>>(m, n, beta, c, ldc);
      KD_CUDA_LAUNCH_CHECK("scale_kernel (gemm with k == 0)");
      return;
    }
    KD_CHECK(h.cublaslt && h.workspace, "CudaHandles without a cuBLASLt handle or workspace");
    const int64_t align[3] = {pointer_alignment_bytes(a, kMaxAlignment), pointer_alignment_bytes(b, kMaxAlignment),
                              pointer_alignment_bytes(c, kMaxAlignment)};
    const ColumnMajorGemm g = row_major_as_column_major(trans_a, trans_b, m, n, k, lda, ldb, ldc);
    GemmCache& cache = gemm_cache();
    const LtGemmPlan* plan = nullptr;
    {
      std::lock_guard<std::mutex> lock(cache.mutex);
      const GemmKey key = {int64_t(reinterpret_cast<uintptr_t>(h.cublaslt)), h.device, trans_a, trans_b, m, n, k,
                           lda, ldb, ldc, c_f32, align[0], align[1], align[2]};
      auto it = cache.plans.find(key);
      if (it == cache.plans.end())
        it = cache.plans.emplace(key, build_plan(h, g, c_f32 ? CUDA_R_32F : CUDA_R_16BF, align)).first;
      plan = it->second.get();
    }
    void* ws = h.workspace->get(plan->workspace_bytes);
    // cuBLAS's A is our B, its B our A; C is read (beta != 0) and written in place.
    KD_CUBLAS_CHECK(cublasLtMatmul(h.cublaslt, plan->desc, &alpha, b, plan->a, a, plan->b, &beta, c, plan->c, c,
                                   plan->c, &plan->algo, ws, plan->workspace_bytes, h.stream));
  } catch (const Error& e) {
    KD_FAIL(describe(trans_a, trans_b, m, n, k, lda, ldb, ldc, c_f32), ": ", e.what());
  }
}

}  // namespace

void gemm_cuda(const CudaHandles& h, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const bf16* a, int64_t lda, const bf16* b, int64_t ldb, float beta, bf16* c, int64_t ldc) {
  gemm_lt(h, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void gemm_cuda(const CudaHandles& h, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const bf16* a, int64_t lda, const bf16* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  gemm_lt(h, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace kd
