// Shampoo on the GPU (see shampoo.h): the products through cuBLAS's strided-batched fp32 GEMMs
// (CUBLAS_COMPUTE_32F under the default math mode: no TF32), the per-matrix scalar and element
// math through shampoo.h's KD_HD functions, as the CPU reference. Reductions use one thread block
// per matrix, so every per-matrix result is deterministic.
//
// The batched Newton iteration keeps, per matrix, its error, an active flag and its iteration
// count in device memory. Every iteration runs the GEMMs for the whole batch into fresh buffers;
// then one block per matrix accepts the step (error < 1.2x the previous) or, for a matrix that is
// no longer active or whose step is discarded, copies its previous M and X into the fresh
// buffers. The host then swaps the buffers, so a frozen matrix keeps its last accepted state.
#include <algorithm>
#include <climits>
#include <utility>

#include "kernels/block_reduce.cuh"
#include "kernels/check.h"
#include "kernels/cuda_check.h"
#include "kernels/gemm_cuda.h"
#include "kernels/shampoo.h"

namespace kd {
namespace {

constexpr int kThreads = 256;

struct SumOp {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct NanMaxOp {
  __device__ float operator()(float a, float b) const { return nan_max(a, b); }
};

// The handle's fp32 GEMMs must run in fp32: no TF32 or emulated math mode. Host scalars.
void prepare_cublas(const CudaHandles& h, const char* what) {
  KD_CHECK(h.cublas, what, ": CudaHandles without a cuBLAS handle");
  cublasMath_t mode;
  KD_CUBLAS_CHECK(cublasGetMathMode(h.cublas, &mode));
  const int base = int(mode) & ~int(CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION);
  KD_CHECK(base == CUBLAS_DEFAULT_MATH || base == CUBLAS_PEDANTIC_MATH, what, ": the cuBLAS math mode ", int(mode),
           " may lower fp32 precision (TF32 or emulation)");
  cublasPointerMode_t pointer_mode;
  KD_CUBLAS_CHECK(cublasGetPointerMode(h.cublas, &pointer_mode));
  KD_CHECK(pointer_mode == CUBLAS_POINTER_MODE_HOST, what, ": the cuBLAS handle must use host scalars");
  KD_CUBLAS_CHECK(cublasSetStream(h.cublas, h.stream));
}

void check_int(const char* what, int64_t v) { KD_CHECK(v >= 0 && v <= INT_MAX, what, ": ", v, " exceeds int"); }

// C_b = alpha op(A_b) op(B_b) + beta C_b for b < batch, row-major, A_b = a + b * sa etc.
void gemm_batched(const CudaHandles& h, bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                  int64_t lda, int64_t sa, const float* b, int64_t ldb, int64_t sb, float beta, float* c, int64_t ldc,
                  int64_t sc, int64_t batch) {
  for (int64_t v : {m, n, k, lda, ldb, ldc, batch}) check_int("shampoo gemm", v);
  const ColumnMajorGemm g = row_major_as_column_major(ta, tb, m, n, k, lda, ldb, ldc);
  // cuBLAS's A is our B buffer, its B our A buffer (gemm_cuda.h).
  KD_CUBLAS_CHECK(cublasGemmStridedBatchedEx(
      h.cublas, g.a.transpose ? CUBLAS_OP_T : CUBLAS_OP_N, g.b.transpose ? CUBLAS_OP_T : CUBLAS_OP_N, int(g.m),
      int(g.n), int(g.k), &alpha, b, CUDA_R_32F, int(g.a.ld), sb, a, CUDA_R_32F, int(g.b.ld), sa, &beta, c, CUDA_R_32F,
      int(g.c.ld), sc, int(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

unsigned grid_for(const CudaHandles& h, int64_t work) {
  const int64_t cap = int64_t(std::max(h.sm_count, 1)) * 16;
  return unsigned(std::max<int64_t>(1, std::min<int64_t>(ceil_div(work, kThreads), cap)));
}

// Consecutive 256-byte aligned pieces of one workspace allocation; with base 0 it only measures.
class Carver {
 public:
  explicit Carver(void* base) : base_(reinterpret_cast<uintptr_t>(base)) {}
  template <typename T>
  T* take(int64_t count) {
    const size_t at = bytes_;
    bytes_ += (size_t(count) * sizeof(T) + 255) / 256 * 256;
    return reinterpret_cast<T*>(base_ + at);
  }
  size_t bytes() const { return bytes_; }

 private:
  uintptr_t base_;
  size_t bytes_ = 0;
};

// The Newton iteration's device state: matrices (batch x n x n), Lanczos vectors (batch x n) and
// tridiagonals (batch x steps), per-matrix scalars.
struct NewtonBuffers {
  float *m, *m_new, *x, *x_new, *slot[4] = {}, *v, *v_prev, *w, *err;
  double *alpha, *beta, *damping, *scale;
  int *used, *done, *active, *iters, *count;
};

NewtonBuffers carve_newton(Carver& c, int64_t n, int64_t batch, int steps, int scratch) {
  NewtonBuffers b;
  for (float** p : {&b.m, &b.m_new, &b.x, &b.x_new}) *p = c.take<float>(batch * n * n);
  for (int s = 0; s <= scratch; ++s) b.slot[s] = c.take<float>(batch * n * n);
  for (float** p : {&b.v, &b.v_prev, &b.w}) *p = c.take<float>(batch * n);
  for (double** p : {&b.alpha, &b.beta}) *p = c.take<double>(batch * steps);
  for (double** p : {&b.damping, &b.scale}) *p = c.take<double>(batch);
  b.err = c.take<float>(batch);
  for (int** p : {&b.used, &b.done, &b.active, &b.iters}) *p = c.take<int>(batch);
  b.count = c.take<int>(1);
  return b;
}

// ---- kernels ----

// dst block b = src block b (rows x cols, leading dimensions and batch strides in elements).
__global__ void copy_blocks_kernel(int64_t batch, int64_t rows, int64_t cols, const float* src, int64_t lds, int64_t ss,
                                   float* dst, int64_t ldd, int64_t ds) {
  const int64_t total = batch * rows * cols, per = rows * cols;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / per, i = e % per / cols, j = e % cols;
    dst[b * ds + i * ldd + j] = src[b * ss + i * lds + j];
  }
}

// One block per matrix: out[b] = sum of squares (double).
__global__ void __launch_bounds__(kThreads)
    frobenius_kernel(int64_t rows, int64_t cols, const float* x, int64_t ld, int64_t stride, double* out) {
  __shared__ gpu::AllReduceStorage<double, kThreads> storage;
  const float* xb = x + int64_t(blockIdx.x) * stride;
  double acc = 0;
  for (int64_t e = threadIdx.x; e < rows * cols; e += kThreads) {
    const double v = xb[e / cols * ld + e % cols];
    acc += v * v;
  }
  acc = gpu::block_all_reduce<kThreads>(acc, SumOp{}, storage);
  if (threadIdx.x == 0) out[blockIdx.x] = acc;
}

__global__ void graft_rescale_kernel(int64_t batch, int64_t rows, int64_t cols, const double* graft_sq,
                                     const double* dir_sq, float* d, int64_t ldd, int64_t ds) {
  const int64_t total = batch * rows * cols, per = rows * cols;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / per, i = e % per / cols, j = e % cols;
    d[b * ds + i * ldd + j] *= float(graft_scale(graft_sq[b], dir_sq[b]));
  }
}

// Lanczos (shampoo.h), one block per matrix: v = normalised lanczos_start, v_prev = 0.
__global__ void __launch_bounds__(kThreads) lanczos_init_kernel(int64_t n, float* v, float* v_prev, int* done) {
  __shared__ gpu::AllReduceStorage<double, kThreads> storage;
  float* vb = v + int64_t(blockIdx.x) * n;
  float* pb = v_prev + int64_t(blockIdx.x) * n;
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) acc += double(lanczos_start(i)) * lanczos_start(i);
  const double norm = sqrt(gpu::block_all_reduce<kThreads>(acc, SumOp{}, storage));
  for (int64_t i = threadIdx.x; i < n; i += kThreads) vb[i] = float(lanczos_start(i) / norm), pb[i] = 0.0f;
  if (threadIdx.x == 0) done[blockIdx.x] = 0;
}

// Step j, given w = A v: alpha, the new w, beta, and the next v (lanczos_lambda_max_cpu's loop).
__global__ void __launch_bounds__(kThreads)
    lanczos_step_kernel(int64_t n, int j, int steps, float* v, float* v_prev, float* w, double* alpha, double* beta,
                        int* used, int* done) {
  __shared__ gpu::AllReduceStorage<double, kThreads> storage;
  const int64_t b = blockIdx.x;
  if (done[b]) return;  // uniform across the block
  float *vb = v + b * n, *pb = v_prev + b * n, *wb = w + b * n;
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) acc += double(vb[i]) * wb[i];
  const double a = gpu::block_all_reduce<kThreads>(acc, SumOp{}, storage);
  const double beta_prev = j > 0 ? beta[b * steps + j - 1] : 0.0;
  acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    wb[i] = float(wb[i] - a * vb[i] - beta_prev * pb[i]);
    acc += double(wb[i]) * wb[i];
  }
  const double bj = sqrt(gpu::block_all_reduce<kThreads>(acc, SumOp{}, storage));
  const bool stop = !(bj > kLanczosBreakdown * (fabs(a) + beta_prev)) || j + 1 == steps;
  if (threadIdx.x == 0) {
    alpha[b * steps + j] = a;
    used[b] = j + 1;
    if (stop)
      done[b] = 1;
    else
      beta[b * steps + j] = bj;
  }
  if (stop) return;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) pb[i] = vb[i], vb[i] = float(wb[i] / bj);
}

// One block per matrix: sum(A^2) and trace(A); thread 0 turns them and the Lanczos tridiagonal
// into lambda_max, the damping d and the Newton scale s.
__global__ void __launch_bounds__(kThreads)
    newton_scalars_kernel(int64_t n, const float* a, int steps, const double* alpha, const double* beta,
                          const int* used, double eps, double lambda_floor, double* damping, double* scale) {
  __shared__ gpu::AllReduceStorage<double, kThreads> storage;
  const int64_t b = blockIdx.x;
  const float* ab = a + b * n * n;
  double sq = 0, tr = 0;
  for (int64_t e = threadIdx.x; e < n * n; e += kThreads) sq += double(ab[e]) * ab[e];
  for (int64_t i = threadIdx.x; i < n; i += kThreads) tr += ab[i * n + i];
  sq = gpu::block_all_reduce<kThreads>(sq, SumOp{}, storage);
  tr = gpu::block_all_reduce<kThreads>(tr, SumOp{}, storage);
  if (threadIdx.x != 0) return;
  const double theta = tridiagonal_max_eigenvalue(used[b], alpha + b * steps, beta + b * steps);
  const double lambda = theta < 0 ? 0.0 : theta;  // NaN stays NaN
  const double d = shampoo_damping(lambda, eps, lambda_floor);
  damping[b] = d;
  scale[b] = newton_scale(lambda, d, sqrt(frobenius_sq_damped(sq, tr, d, n)));
}

// M_0 = (A + d I) / s, X_0 = s^(-1/p) I.
__global__ void newton_init_kernel(int64_t n, int64_t batch, int p, const float* a, const double* damping,
                                   const double* scale, float* m, float* x) {
  const int64_t nn = n * n;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < batch * nn;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = e / nn, i = e % nn / n, j = e % n;
    m[e] = newton_m0_element(a[e], i == j, damping[b], scale[b]);
    x[e] = i == j ? float(pow(scale[b], -1.0 / p)) : 0.0f;
  }
}

// M_i = (1 + 1/p) I - M / p
__global__ void newton_mi_kernel(int64_t n, int64_t batch, int p, const float* m, float* mi) {
  const int64_t nn = n * n;
  for (int64_t e = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; e < batch * nn; e += int64_t(gridDim.x) * blockDim.x)
    mi[e] = newton_mi_element(m[e], e % nn / n == e % n, p);
}

// max|M - I| of this block's matrix, NaN-propagating, known to every thread.
__device__ float identity_error(int64_t n, const float* m, gpu::AllReduceStorage<float, kThreads>& storage) {
  float e = 0.0f;
  for (int64_t k = threadIdx.x; k < n * n; k += kThreads) e = nan_max(e, fabsf(m[k] - (k / n == k % n ? 1.0f : 0.0f)));
  return gpu::block_all_reduce<kThreads>(e, NanMaxOp{}, storage);
}

__global__ void __launch_bounds__(kThreads)
    newton_start_kernel(int64_t n, const float* m, float tolerance, float* err, int* active, int* iters) {
  __shared__ gpu::AllReduceStorage<float, kThreads> storage;
  const int64_t b = blockIdx.x;
  const float e = identity_error(n, m + b * n * n, storage);
  if (threadIdx.x == 0) err[b] = e, active[b] = e > tolerance, iters[b] = 0;
}

// Accept matrix b's step (M_new, X_new) or keep its previous state by copying it over the step.
__global__ void __launch_bounds__(kThreads)
    newton_commit_kernel(int64_t n, const float* m, const float* x, float* m_new, float* x_new, float tolerance,
                         float* err, int* active, int* iters) {
  __shared__ gpu::AllReduceStorage<float, kThreads> storage;
  const int64_t b = blockIdx.x, nn = n * n;
  bool accept = false;
  if (active[b]) {                  // uniform across the block
    const float previous = err[b];  // read before thread 0 updates it (identity_error synchronises)
    const float e = identity_error(n, m_new + b * nn, storage);
    accept = e < kNewtonMaxErrorGrowth * previous;
    if (threadIdx.x == 0) {
      if (accept) err[b] = e, ++iters[b];
      active[b] = accept && e > tolerance;
    }
  }
  if (accept) return;
  for (int64_t k = threadIdx.x; k < nn; k += kThreads)
    m_new[b * nn + k] = m[b * nn + k], x_new[b * nn + k] = x[b * nn + k];
}

__global__ void __launch_bounds__(kThreads) count_active_kernel(int64_t batch, const int* active, int* count) {
  __shared__ gpu::AllReduceStorage<int, kThreads> storage;
  int c = 0;
  for (int64_t b = threadIdx.x; b < batch; b += kThreads) c += active[b];
  c = gpu::block_all_reduce<kThreads>(c, SumOp{}, storage);
  if (threadIdx.x == 0) *count = c;
}

__global__ void __launch_bounds__(kThreads)
    accept_kernel(int64_t n, const float* candidates, const float* errors, float max_error, float* roots) {
  const int64_t b = blockIdx.x, nn = n * n;
  if (!inverse_root_ok(errors[b], max_error)) return;
  for (int64_t k = threadIdx.x; k < nn; k += kThreads) roots[b * nn + k] = candidates[b * nn + k];
}

void check_batch(const char* what, int64_t batch) {
  KD_CHECK(batch >= 1 && batch <= INT_MAX, what, ": batch must be in [1, 2^31), got ", batch);
}

}  // namespace

void shampoo_stats_update_cuda(const CudaHandles& h, int64_t batch, int64_t rows, int64_t cols, const float* g,
                               int64_t ldg, int64_t g_stride, float beta2, float* l, float* r) {
  const char* what = "shampoo_stats_update_cuda";
  check_batch(what, batch);
  KD_CHECK(rows > 0 && cols > 0, what, ": block [", rows, ", ", cols, "] must have positive sides");
  KD_CHECK(ldg >= cols, what, ": ldg ", ldg, " < cols ", cols);
  prepare_cublas(h, what);
  const float w = float(shampoo_stats_weight(double(beta2)));
  if (l)
    gemm_batched(h, false, true, rows, rows, cols, w, g, ldg, g_stride, g, ldg, g_stride, beta2, l, rows, rows * rows,
                 batch);  // G G^T
  if (r)
    gemm_batched(h, true, false, cols, cols, rows, w, g, ldg, g_stride, g, ldg, g_stride, beta2, r, cols, cols * cols,
                 batch);  // G^T G
}

int inverse_root_newton_cuda(const CudaHandles& h, int64_t n, int64_t batch, const float* a,
                             const InverseRootConfig& cfg, float* x, float* errors, int* iterations) {
  const char* what = "inverse_root_newton_cuda";
  check_batch(what, batch);
  KD_CHECK(n > 0 && n <= INT_MAX, what, ": matrix size n must be positive, got ", n);
  KD_CHECK(cfg.p >= 1, what, ": root order p must be >= 1, got ", cfg.p);
  KD_CHECK(cfg.eps >= 0 && cfg.lambda_floor > 0, what, ": eps ", cfg.eps, " must be >= 0, lambda_floor ",
           cfg.lambda_floor, " > 0");
  KD_CHECK(cfg.max_iters >= 0 && cfg.lanczos_steps >= 1 && cfg.check_every >= 0, what, ": bad max_iters ",
           cfg.max_iters, ", lanczos_steps ", cfg.lanczos_steps, " or check_every ", cfg.check_every);
  KD_CHECK(x != a && errors, what, ": x must not alias a, and errors is required");
  KD_CHECK(h.workspace, what, ": CudaHandles without a workspace");
  prepare_cublas(h, what);
  const int64_t nn = n * n;
  const int steps = int(std::min<int64_t>(cfg.lanczos_steps, n));
  const MatrixPowerPlan plan = matrix_power_plan(cfg.p);

  Carver measure(nullptr);
  carve_newton(measure, n, batch, steps, plan.scratch);
  Carver ws(h.workspace->get(measure.bytes()));
  NewtonBuffers nb = carve_newton(ws, n, batch, steps, plan.scratch);

  // lambda_max (Lanczos), damping and scale
  const unsigned blocks = unsigned(batch);
  lanczos_init_kernel<<<blocks, kThreads, 0, h.stream>>>(n, nb.v, nb.v_prev, nb.done);
  KD_CUDA_LAUNCH_CHECK("lanczos_init_kernel");
  const float one = 1.0f, zero = 0.0f;
  for (int j = 0; j < steps; ++j) {
    // w = A v (A symmetric: its column-major view, A^T, is A)
    KD_CUBLAS_CHECK(cublasSgemvStridedBatched(h.cublas, CUBLAS_OP_T, int(n), int(n), &one, a, int(n), nn, nb.v, 1, n,
                                              &zero, nb.w, 1, n, int(batch)));
    lanczos_step_kernel<<<blocks, kThreads, 0, h.stream>>>(n, j, steps, nb.v, nb.v_prev, nb.w, nb.alpha, nb.beta,
                                                           nb.used, nb.done);
    KD_CUDA_LAUNCH_CHECK("lanczos_step_kernel");
  }
  newton_scalars_kernel<<<blocks, kThreads, 0, h.stream>>>(n, a, steps, nb.alpha, nb.beta, nb.used, cfg.eps,
                                                           cfg.lambda_floor, nb.damping, nb.scale);
  KD_CUDA_LAUNCH_CHECK("newton_scalars_kernel");
  newton_init_kernel<<<grid_for(h, batch * nn), kThreads, 0, h.stream>>>(n, batch, cfg.p, a, nb.damping, nb.scale, nb.m,
                                                                         nb.x);
  KD_CUDA_LAUNCH_CHECK("newton_init_kernel");
  newton_start_kernel<<<blocks, kThreads, 0, h.stream>>>(n, nb.m, cfg.tolerance, nb.err, nb.active, nb.iters);
  KD_CUDA_LAUNCH_CHECK("newton_start_kernel");

  int ran = 0;
  for (; ran < cfg.max_iters; ++ran) {
    if (cfg.check_every > 0 && ran % cfg.check_every == 0) {
      count_active_kernel<<<1, kThreads, 0, h.stream>>>(batch, nb.active, nb.count);
      KD_CUDA_LAUNCH_CHECK("count_active_kernel");
      int host_count = 0;
      KD_CUDA_CHECK(cudaMemcpyAsync(&host_count, nb.count, sizeof(int), cudaMemcpyDeviceToHost, h.stream));
      KD_CUDA_CHECK(cudaStreamSynchronize(h.stream));
      if (host_count == 0) break;
    }
    newton_mi_kernel<<<grid_for(h, batch * nn), kThreads, 0, h.stream>>>(n, batch, cfg.p, nb.m, nb.slot[0]);
    KD_CUDA_LAUNCH_CHECK("newton_mi_kernel");
    for (const MatrixPowerPlan::Step& st : plan.steps)
      gemm_batched(h, false, false, n, n, n, 1.0f, nb.slot[st.a], n, nn, nb.slot[st.b], n, nn, 0.0f, nb.slot[st.dst], n,
                   nn, batch);
    gemm_batched(h, false, false, n, n, n, 1.0f, nb.slot[plan.result], n, nn, nb.m, n, nn, 0.0f, nb.m_new, n, nn,
                 batch);  // M <- M_i^p M
    gemm_batched(h, false, false, n, n, n, 1.0f, nb.x, n, nn, nb.slot[0], n, nn, 0.0f, nb.x_new, n, nn,
                 batch);  // X <- X M_i
    newton_commit_kernel<<<blocks, kThreads, 0, h.stream>>>(n, nb.m, nb.x, nb.m_new, nb.x_new, cfg.tolerance, nb.err,
                                                            nb.active, nb.iters);
    KD_CUDA_LAUNCH_CHECK("newton_commit_kernel");
    std::swap(nb.m, nb.m_new);
    std::swap(nb.x, nb.x_new);
  }
  KD_CUDA_CHECK(cudaMemcpyAsync(x, nb.x, size_t(batch * nn) * sizeof(float), cudaMemcpyDeviceToDevice, h.stream));
  KD_CUDA_CHECK(cudaMemcpyAsync(errors, nb.err, size_t(batch) * sizeof(float), cudaMemcpyDeviceToDevice, h.stream));
  if (iterations)
    KD_CUDA_CHECK(
        cudaMemcpyAsync(iterations, nb.iters, size_t(batch) * sizeof(int), cudaMemcpyDeviceToDevice, h.stream));
  return ran;
}

void inverse_root_accept_cuda(const CudaHandles& h, int64_t n, int64_t batch, const float* candidates,
                              const float* errors, float max_error, float* roots) {
  check_batch("inverse_root_accept_cuda", batch);
  KD_CHECK(n > 0, "inverse_root_accept_cuda: matrix size n must be positive, got ", n);
  accept_kernel<<<unsigned(batch), kThreads, 0, h.stream>>>(n, candidates, errors, max_error, roots);
  KD_CUDA_LAUNCH_CHECK("accept_kernel");
}

void shampoo_direction_cuda(const CudaHandles& h, int64_t batch, int64_t rows, int64_t cols, const float* l_inv,
                            const float* g, int64_t ldg, int64_t g_stride, const float* r_inv, float* d, int64_t ldd,
                            int64_t d_stride) {
  const char* what = "shampoo_direction_cuda";
  check_batch(what, batch);
  KD_CHECK(rows > 0 && cols > 0, what, ": block [", rows, ", ", cols, "] must have positive sides");
  KD_CHECK(ldg >= cols && ldd >= cols, what, ": ldg ", ldg, " and ldd ", ldd, " must be >= cols ", cols);
  if (!l_inv && !r_inv) {
    copy_blocks_kernel<<<grid_for(h, batch * rows * cols), kThreads, 0, h.stream>>>(batch, rows, cols, g, ldg, g_stride,
                                                                                    d, ldd, d_stride);
    KD_CUDA_LAUNCH_CHECK("copy_blocks_kernel");
    return;
  }
  prepare_cublas(h, what);
  const int64_t ll = rows * rows, rr = cols * cols;
  if (!r_inv)
    return gemm_batched(h, false, false, rows, cols, rows, 1.0f, l_inv, rows, ll, g, ldg, g_stride, 0.0f, d, ldd,
                        d_stride, batch);
  if (!l_inv)
    return gemm_batched(h, false, false, rows, cols, cols, 1.0f, g, ldg, g_stride, r_inv, cols, rr, 0.0f, d, ldd,
                        d_stride, batch);
  KD_CHECK(h.workspace, what, ": CudaHandles without a workspace");
  float* t = static_cast<float*>(h.workspace->get(size_t(batch * rows * cols) * sizeof(float)));  // Linv G
  gemm_batched(h, false, false, rows, cols, rows, 1.0f, l_inv, rows, ll, g, ldg, g_stride, 0.0f, t, cols, rows * cols,
               batch);
  gemm_batched(h, false, false, rows, cols, cols, 1.0f, t, cols, rows * cols, r_inv, cols, rr, 0.0f, d, ldd, d_stride,
               batch);
}

void frobenius_norm_sq_cuda(const CudaHandles& h, int64_t batch, int64_t rows, int64_t cols, const float* x, int64_t ld,
                            int64_t stride, double* out) {
  check_batch("frobenius_norm_sq_cuda", batch);
  KD_CHECK(rows > 0 && cols > 0 && ld >= cols, "frobenius_norm_sq_cuda: bad block [", rows, ", ", cols, "] ld ", ld);
  frobenius_kernel<<<unsigned(batch), kThreads, 0, h.stream>>>(rows, cols, x, ld, stride, out);
  KD_CUDA_LAUNCH_CHECK("frobenius_kernel");
}

void graft_rescale_cuda(const CudaHandles& h, int64_t batch, int64_t rows, int64_t cols, const double* graft_norm_sq,
                        const double* direction_norm_sq, float* d, int64_t ldd, int64_t d_stride) {
  check_batch("graft_rescale_cuda", batch);
  KD_CHECK(rows > 0 && cols > 0 && ldd >= cols, "graft_rescale_cuda: bad block [", rows, ", ", cols, "] ldd ", ldd);
  graft_rescale_kernel<<<grid_for(h, batch * rows * cols), kThreads, 0, h.stream>>>(
      batch, rows, cols, graft_norm_sq, direction_norm_sq, d, ldd, d_stride);
  KD_CUDA_LAUNCH_CHECK("graft_rescale_kernel");
}

}  // namespace kd
