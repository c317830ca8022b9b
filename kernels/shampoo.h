// Shampoo's low-level kernels: block partition, Kronecker-factor statistics, damped inverse p-th
// roots (double eigendecomposition reference; fp32 coupled Newton iteration on the CPU and,
// batched, on the GPU), the preconditioned direction and the grafting norm. The optimizer
// (engine/optim/shampoo.*) strings them together:
//
//   per block G (r x c) of a gradient:   L <- b2 L + (1 - b2) G G^T   (r x r)
//                                        R <- b2 R + (1 - b2) G^T G   (c x c)
//   every k steps:                       Linv = (L + d_L I)^(-1/4),  Rinv = (R + d_R I)^(-1/4)
//   every step:                          D = Linv G Rinv,  D *= ||graft|| / ||D||
//
// Memory layout: every matrix is row-major. A block of a larger row-major matrix is addressed by
// its first element and the larger matrix's leading dimension (ld, in elements). Square n x n
// matrices (statistics, roots) are contiguous (ld = n); a batch of them is stacked with stride
// n * n. Functions ending in _cpu take host pointers, _cuda device pointers, and run on
// CudaHandles::stream (the CPU reference is the specification; the CUDA versions compute the same).
//
// The calls, per matrix parameter [rows, cols]:
//   blocks = shampoo_blocks(rows, cols, block_size)
//   statistics: shampoo_stats_update_* per block; on the GPU batched over equal-size blocks, e.g.
//     the full-size blocks of one block row (g_stride = block_size), remainders in their own call
//   every k steps: group the statistics of one size n (stacked, n * n apart; pad a group to a
//     fixed batch with identity matrices), inverse_root_newton_cuda into candidate roots, then
//     inverse_root_accept_cuda: a root whose error is NaN or above the bound keeps the old one
//   every step: shampoo_direction_* into a buffer; the grafted optimizer's step into another;
//     frobenius_norm_sq_* of both; graft_rescale_cuda (CPU: scale by graft_scale)
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

// ---- block partition ----
// A [rows, cols] matrix is cut into a grid of blocks of block_size x block_size; the last block
// row (column) holds the remainder. Blocks are numbered in row-major order of the grid.
struct ShampooBlock {
  int64_t row0, col0, rows, cols;
};

KD_HD int64_t shampoo_grid_extent(int64_t extent, int64_t block_size) { return ceil_div(extent, block_size); }

// Block `index` of the grid (0 <= index < grid rows * grid cols).
KD_HD ShampooBlock shampoo_block_at(int64_t rows, int64_t cols, int64_t block_size, int64_t index) {
  const int64_t grid_cols = shampoo_grid_extent(cols, block_size);
  const int64_t bi = index / grid_cols, bj = index % grid_cols;
  const int64_t r0 = bi * block_size, c0 = bj * block_size;
  const int64_t r = rows - r0 < block_size ? rows - r0 : block_size;
  const int64_t c = cols - c0 < block_size ? cols - c0 : block_size;
  return ShampooBlock{r0, c0, r, c};
}

// Every block, in index order; they cover every element exactly once. rows, cols, block_size > 0.
std::vector<ShampooBlock> shampoo_blocks(int64_t rows, int64_t cols, int64_t block_size);

// ---- statistics ----
// L <- beta2 L + w G G^T and R <- beta2 R + w G^T G with w = 1 - beta2, or w = 1 when beta2 == 1
// (plain accumulation, AdaGrad-style, as Google's Shampoo). G is rows x cols with leading
// dimension ldg >= cols; L is rows x rows, R is cols x cols (contiguous). Either may be null: that
// side is skipped.
KD_HD double shampoo_stats_weight(double beta2) { return beta2 == 1.0 ? 1.0 : 1.0 - beta2; }

template <typename T>
void shampoo_stats_update_cpu(int64_t rows, int64_t cols, const T* g, int64_t ldg, T beta2, T* l, T* r);

// ---- damped inverse p-th root ----
// X = (A + d I)^(-1/p) for a symmetric positive semi-definite n x n A, with the relative damping
// d = eps * max(lambda_max(A), lambda_floor). The floor keeps the root finite when A = 0
// (lambda_max = 0): then X = (eps * lambda_floor)^(-1/p) I, a scaled identity (Google's Shampoo
// floors lambda_max at 1e-16 the same way). Eigenvalues below 0 (rounding) are taken as 0.
struct InverseRootConfig {
  int p = 4;
  double eps = 1e-6;
  double lambda_floor = 1e-16;
  // Newton iteration only:
  int max_iters = 100;      // cap on iterations
  float tolerance = 1e-6f;  // stop once max|M - I| <= tolerance
  int lanczos_steps = 32;   // Lanczos steps for the lambda_max estimate
  int check_every = 4;      // GPU: poll for convergence every this many iterations (0: never,
                            // always max_iters: no host synchronisation, capturable in a graph)
};

struct InverseRootInfo {
  double lambda_max = 0;  // eigen: exact (clamped at 0); Newton: the Lanczos estimate
  double lambda_min = 0;  // eigen: exact (clamped at 0); Newton: not computed (0)
  double damping = 0;     // d
  float error = 0;        // Newton: max|M - I| of the returned X; eigen: 0. NaN or inf: failed
  int iterations = 0;     // Newton iterations accepted
};

// A root is usable when its error is finite and at most max_error (NaN compares false).
KD_HD bool inverse_root_ok(float error, float max_error) { return error <= max_error; }

KD_HD double shampoo_damping(double lambda_max, double eps, double lambda_floor) {
  return eps * (lambda_max < lambda_floor ? lambda_floor : lambda_max);  // NaN stays NaN
}

// Reference: eigendecomposition in double (LAPACK dsyevd; the Jacobi fallback without OpenBLAS),
// of (A + A^T) / 2. A non-finite input or a failed decomposition gives error = NaN and X = NaN.
// The float version converts to double and back.
InverseRootInfo inverse_root_eigen_cpu(int64_t n, const double* a, const InverseRootConfig& cfg, double* x);
InverseRootInfo inverse_root_eigen_cpu(int64_t n, const float* a, const InverseRootConfig& cfg, float* x);

// Symmetric eigendecomposition of the n x n row-major a (its lower triangle is read): on return
// row k of `a` is the unit eigenvector of the eigenvalue w[k], ascending. false when it failed.
// symmetric_eigen_cpu is LAPACK's dsyevd when built with OpenBLAS, else the cyclic Jacobi method,
// which is always compiled so the tests can compare the two.
bool symmetric_eigen_cpu(int64_t n, double* a, double* w);
bool symmetric_eigen_jacobi_cpu(int64_t n, double* a, double* w);

// ---- the coupled Newton iteration (fp32), shared by the CPU and GPU versions ----
// Guo & Higham's coupled iteration, as Google's Shampoo matrix_inverse_pth_root:
//   A_d = A + d I;  s ~ lambda_max(A_d) (below);  M_0 = A_d / s;  X_0 = s^(-1/p) I
//   M_i = (1 + 1/p) I - M / p;   M <- M_i^p M;   X <- X M_i
// keeps M = X^p A_d, and M -> I (so X -> A_d^(-1/p)) for eigenvalues of M_0 in (0, p + 1); with
// s >= lambda_max they lie in (0, 1], where the scalar map m -> m (1 + (1 - m)/p)^p increases
// monotonically to 1 (a small eigenvalue grows ~(1 + 1/p)^p = 2.44x per step for p = 4: ~16
// steps at condition 1e6, then quadratic convergence). The error is max|M - I| over the
// entries. The loop stops at tolerance, at max_iters, or when an iteration would raise the error
// above 1.2x (fp32 rounding near the floor; Google's rule): that iteration is discarded, so X and
// the error always belong together.
//
// Accuracy in fp32 against the double root (shampoo_test.cpp, n = 64..1024): relative Frobenius
// error ~1e-6 at condition 1e2, ~2e-5 at 1e4, 1e-3..3e-3 at 1e6 (after damping), 9 to 21
// iterations. For low-rank statistics, whose null space sits at the damping d, the fp32 rounding
// of A + d I dominates: ~0.2 u / eps (u = 2^-24), i.e. 1.4e-2 at eps = 1e-6, 1.3e-4 at 1e-4.
//
// s = min(||A_d||_F, lambda_est + d): lambda_est is the Lanczos estimate, which approaches
// lambda_max from below, so s may be a little below lambda_max(A_d); eigenvalues of M_0 slightly
// above 1 converge as well (anything below p + 1 does). The Frobenius norm is a true bound, and
// the better one should Lanczos not have converged.
KD_HD double newton_scale(double lambda_est, double damping, double frobenius_damped) {
  const double est = lambda_est + damping;
  return frobenius_damped < est ? frobenius_damped : est;  // NaN stays NaN
}
// ||A + d I||_F^2 from sum(A^2) and trace(A).
KD_HD double frobenius_sq_damped(double sum_sq, double trace, double damping, int64_t n) {
  return sum_sq + 2.0 * damping * trace + double(n) * damping * damping;
}
KD_HD float newton_m0_element(float a, bool diagonal, double damping, double scale) {
  return float((double(a) + (diagonal ? damping : 0.0)) / scale);
}
KD_HD float newton_mi_element(float m, bool diagonal, int p) {
  return (diagonal ? 1.0f + 1.0f / float(p) : 0.0f) - m / float(p);
}
constexpr float kNewtonMaxErrorGrowth = 1.2f;
// max that propagates NaN (fmaxf would drop it), for the error max|M - I|
KD_HD float nan_max(float a, float b) { return a != a ? a : (b != b ? b : (a < b ? b : a)); }

// lambda_max by Lanczos: v_0 = lanczos_start / ||.||, then for j = 0, 1, ...
//   w = A v_j (fp32);  alpha_j = v_j.w;  w -= alpha_j v_j + beta_{j-1} v_{j-1};  beta_j = ||w||;
//   v_{j+1} = w / beta_j
// (scalars in double), stopping after `steps` steps or at breakdown (beta_j <= kLanczosBreakdown
// (|alpha_j| + beta_{j-1}): an invariant subspace, e.g. A = 0). The estimate is the largest
// eigenvalue of the tridiagonal T = tridiag(beta, alpha, beta), a Ritz value: below lambda_max,
// and much closer than power iteration's Rayleigh quotient for the same matrix-vector products
// (32 steps: ~1e-7 relative on 1024 x 1024 Wishart matrices, where power iteration is ~1e-2 off).
constexpr double kLanczosBreakdown = 1e-6;
// The start vector (before normalisation): a fixed pattern in [0.5, 1.5).
KD_HD float lanczos_start(int64_t i) {
  const uint32_t h = uint32_t(i + 1) * 2654435761u;
  return 0.5f + float(h >> 8) * (1.0f / 16777216.0f);
}
// Largest eigenvalue of the m x m symmetric tridiagonal matrix with diagonal alpha[0, m) and
// off-diagonal beta[0, m - 1), by bisection on the Sturm count (eigenvalues below x = negative
// pivots of the LDL^T factorisation of T - x I). NaN if any entry is not finite (or above 1e300).
KD_HD double tridiagonal_max_eigenvalue(int m, const double* alpha, const double* beta) {
  double lo = 0, hi = 0, scale = 0;
  for (int i = 0; i < m; ++i) {
    const double off = (i > 0 ? fabs(beta[i - 1]) : 0.0) + (i + 1 < m ? fabs(beta[i]) : 0.0);
    if (!(fabs(alpha[i]) + off < 1e300)) return std::numeric_limits<double>::quiet_NaN();
    lo = i == 0 || alpha[i] - off < lo ? alpha[i] - off : lo;  // Gershgorin bounds
    hi = i == 0 || alpha[i] + off > hi ? alpha[i] + off : hi;
    scale = fabs(alpha[i]) + off > scale ? fabs(alpha[i]) + off : scale;
  }
  const double pivot_min = 1e-300 + 1e-30 * scale;
  for (int it = 0; it < 200; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (mid <= lo || mid >= hi) break;  // no double between them
    int below = 0;
    double q = 1;
    for (int i = 0; i < m; ++i) {
      q = alpha[i] - mid - (i > 0 ? beta[i - 1] * beta[i - 1] / q : 0.0);
      if (fabs(q) < pivot_min) q = -pivot_min;
      below += q < 0;
    }
    if (below == m)
      hi = mid;  // every eigenvalue below mid
    else
      lo = mid;
  }
  return hi;
}

// M_i^p by binary powering over 4 n x n slots: slot 0 holds M_i (never written), 1..3 scratch.
// step k: slot dst = slot a * slot b. p = 4: 2 steps (M_i^2, then its square).
struct MatrixPowerPlan {
  struct Step {
    int dst, a, b;
  };
  std::vector<Step> steps;
  int result = 0;   // slot holding M_i^p
  int scratch = 0;  // scratch slots used (the highest slot index)
};
MatrixPowerPlan matrix_power_plan(int p);

// lambda_max estimate of a symmetric n x n A by min(steps, n) Lanczos steps (above). 0 for A = 0,
// NaN for non-finite input.
double lanczos_lambda_max_cpu(int64_t n, const float* a, int steps);

// The Newton iteration on one matrix. x must not alias a.
InverseRootInfo inverse_root_newton_cpu(int64_t n, const float* a, const InverseRootConfig& cfg, float* x);

// ---- preconditioned direction and grafting ----
// D = Linv G Rinv (rows x cols), D into its own buffer (leading dimension ldd). A null Linv or
// Rinv stands for the identity (one-sided preconditioning).
template <typename T>
void shampoo_direction_cpu(int64_t rows, int64_t cols, const T* l_inv, const T* g, int64_t ldg, const T* r_inv, T* d,
                           int64_t ldd);

// Sum of squares of a rows x cols block (leading dimension ld), accumulated in double.
template <typename T>
double frobenius_norm_sq_cpu(int64_t rows, int64_t cols, const T* x, int64_t ld);

// The factor that gives the Shampoo direction the grafted optimizer's norm: ||graft|| / ||D||,
// from the squared norms; 0 when D = 0.
KD_HD double graft_scale(double graft_norm_sq, double direction_norm_sq) {
  return direction_norm_sq == 0.0 ? 0.0 : sqrt(graft_norm_sq / direction_norm_sq);
}

// ---- CUDA (fp32; cuBLAS with CUBLAS_COMPUTE_32F, no TF32) ----
// Batched versions take `batch` equal-size blocks: G blocks `g_stride` elements apart (e.g. the
// blocks of one block row of a parameter: g_stride = block_size), L and R stacked with strides
// rows^2 and cols^2.
void shampoo_stats_update_cuda(const CudaHandles& h, int64_t batch, int64_t rows, int64_t cols, const float* g,
                               int64_t ldg, int64_t g_stride, float beta2, float* l, float* r);

// The Newton iteration on `batch` n x n matrices stacked with stride n * n (pad a size class
// with identity blocks). x must not alias a. errors[b] (device, required) and iterations[b]
// (device, may be null) as in InverseRootInfo. All matrices step together; a converged or
// stopped matrix is frozen. Returns the number of iterations run (the batch's loop count).
int inverse_root_newton_cuda(const CudaHandles& h, int64_t n, int64_t batch, const float* a,
                             const InverseRootConfig& cfg, float* x, float* errors, int* iterations);

// roots[b] = candidates[b] where inverse_root_ok(errors[b], max_error); others left unchanged.
void inverse_root_accept_cuda(const CudaHandles& h, int64_t n, int64_t batch, const float* candidates,
                              const float* errors, float max_error, float* roots);

// D_b = Linv_b G_b Rinv_b; G_b and D_b are g_stride and d_stride elements apart; null Linv/Rinv: identity.
void shampoo_direction_cuda(const CudaHandles& h, int64_t batch, int64_t rows, int64_t cols, const float* l_inv,
                            const float* g, int64_t ldg, int64_t g_stride, const float* r_inv, float* d, int64_t ldd,
                            int64_t d_stride);

// out[b] (device) = sum of squares of block b (double accumulation; deterministic).
void frobenius_norm_sq_cuda(const CudaHandles& h, int64_t batch, int64_t rows, int64_t cols, const float* x, int64_t ld,
                            int64_t stride, double* out);

// D_b *= graft_scale(graft_norm_sq[b], direction_norm_sq[b]), both device arrays: no host sync.
void graft_rescale_cuda(const CudaHandles& h, int64_t batch, int64_t rows, int64_t cols, const double* graft_norm_sq,
                        const double* direction_norm_sq, float* d, int64_t ldd, int64_t d_stride);

}  // namespace kd
