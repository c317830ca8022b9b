// Shampoo's CPU reference (see shampoo.h): products through gemm_cpu (OpenBLAS), the eigen root
// through LAPACK's dsyevd (exported by Debian's OpenBLAS; declared here, there is no header), the
// Newton iteration in fp32 with the KD_HD element functions the CUDA version uses.
#include "kernels/shampoo.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/check.h"
#include "kernels/gemm.h"

#if KD_HAVE_OPENBLAS
extern "C" void dsyevd_(const char* jobz, const char* uplo, const int* n, double* a, const int* lda, double* w,
                        double* work, const int* lwork, int* iwork, const int* liwork, int* info, size_t jobz_len,
                        size_t uplo_len);
#endif

namespace kd {

namespace {

void check_root_args(const char* what, int64_t n, const InverseRootConfig& cfg) {
  KD_CHECK(n > 0, what, ": matrix size n must be positive, got ", n);
  KD_CHECK(cfg.p >= 1, what, ": root order p must be >= 1, got ", cfg.p);
  KD_CHECK(cfg.eps >= 0, what, ": damping eps must be >= 0, got ", cfg.eps);
  KD_CHECK(cfg.lambda_floor > 0, what, ": lambda_floor must be > 0, got ", cfg.lambda_floor);
}

template <typename T>
bool all_finite(int64_t count, const T* x) {
  for (int64_t i = 0; i < count; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

// max|M - I| over the entries, NaN if any entry is NaN.
float identity_error(int64_t n, const float* m) {
  float e = 0.0f;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) e = nan_max(e, std::fabs(m[i * n + j] - (i == j ? 1.0f : 0.0f)));
  return e;
}

// Square row-major product c = a b (n x n, fp32).
void matmul(int64_t n, const float* a, const float* b, float* c) {
  gemm_cpu<float>(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
}

}  // namespace

std::vector<ShampooBlock> shampoo_blocks(int64_t rows, int64_t cols, int64_t block_size) {
  KD_CHECK(rows > 0 && cols > 0, "shampoo_blocks: matrix [", rows, ", ", cols, "] must have positive sides");
  KD_CHECK(block_size > 0, "shampoo_blocks: block_size must be positive, got ", block_size);
  const int64_t count = shampoo_grid_extent(rows, block_size) * shampoo_grid_extent(cols, block_size);
  std::vector<ShampooBlock> blocks;
  blocks.reserve(size_t(count));
  for (int64_t i = 0; i < count; ++i) blocks.push_back(shampoo_block_at(rows, cols, block_size, i));
  return blocks;
}

template <typename T>
void shampoo_stats_update_cpu(int64_t rows, int64_t cols, const T* g, int64_t ldg, T beta2, T* l, T* r) {
  KD_CHECK(rows > 0 && cols > 0, "shampoo_stats_update: block [", rows, ", ", cols, "] must have positive sides");
  KD_CHECK(ldg >= cols, "shampoo_stats_update: ldg ", ldg, " < cols ", cols);
  const T w = T(shampoo_stats_weight(double(beta2)));
  if (l) gemm_cpu<T>(false, true, rows, rows, cols, w, g, ldg, g, ldg, beta2, l, rows);  // G G^T
  if (r) gemm_cpu<T>(true, false, cols, cols, rows, w, g, ldg, g, ldg, beta2, r, cols);  // G^T G
}

// ---- eigendecomposition ----

bool symmetric_eigen_cpu(int64_t n, double* a, double* w) {
#if KD_HAVE_OPENBLAS
  KD_CHECK(n > 0 && n <= std::numeric_limits<int>::max(), "symmetric_eigen: bad size ", n);
  // Row-major lower triangle = column-major upper ('U'); the column-major eigenvectors come back
  // as rows of the row-major buffer.
  const int ni = int(n);
  int info = 0, lwork = -1, liwork = -1, iwork_size = 0;
  double work_size = 0;
  dsyevd_("V", "U", &ni, a, &ni, w, &work_size, &lwork, &iwork_size, &liwork, &info, 1, 1);
  if (info != 0) return false;
  lwork = int(work_size), liwork = iwork_size;
  std::vector<double> work(size_t(std::max(lwork, 1)));
  std::vector<int> iwork(size_t(std::max(liwork, 1)));
  dsyevd_("V", "U", &ni, a, &ni, w, work.data(), &lwork, iwork.data(), &liwork, &info, 1, 1);
  return info == 0;
#else
  return symmetric_eigen_jacobi_cpu(n, a, w);
#endif
}

// Cyclic Jacobi: rotate away each off-diagonal pair (p, q) in turn until the off-diagonal mass is
// negligible. a (symmetric, full) converges to diag(w); v accumulates the rotations' product.
bool symmetric_eigen_jacobi_cpu(int64_t n, double* a, double* w) {
  KD_CHECK(n > 0, "symmetric_eigen_jacobi: bad size ", n);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = i + 1; j < n; ++j) a[i * n + j] = a[j * n + i];  // from the lower triangle
  std::vector<double> v(size_t(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) v[size_t(i * n + i)] = 1.0;
  auto A = [&](int64_t i, int64_t j) -> double& { return a[i * n + j]; };
  bool converged = false;
  for (int sweep = 0; sweep < 100 && !converged; ++sweep) {
    double off = 0, diag = 0;
    for (int64_t i = 0; i < n; ++i) {
      diag += A(i, i) * A(i, i);
      for (int64_t j = i + 1; j < n; ++j) off += A(i, j) * A(i, j);
    }
    converged = off <= 1e-30 * diag;  // off-diagonal norm ~1e-15 of the diagonal's
    for (int64_t p = 0; p < n && !converged; ++p)
      for (int64_t q = p + 1; q < n; ++q) {
        if (std::fabs(A(p, q)) <= 1e-18 * (std::fabs(A(p, p)) + std::fabs(A(q, q)))) {
          A(p, q) = A(q, p) = 0;  // below rounding of the diagonal: done (0 stays 0)
          continue;
        }
        // Choose t = tan(theta) zeroing A(p, q): the smaller root of t^2 + 2 tau t - 1 = 0.
        const double tau = (A(q, q) - A(p, p)) / (2 * A(p, q));
        const double t = (tau >= 0 ? 1.0 : -1.0) / (std::fabs(tau) + std::sqrt(1 + tau * tau));
        const double c = 1 / std::sqrt(1 + t * t), s = t * c;
        for (int64_t k = 0; k < n; ++k) {  // columns p, q of A and V
          const double akp = A(k, p), akq = A(k, q);
          A(k, p) = c * akp - s * akq, A(k, q) = s * akp + c * akq;
          const double vkp = v[size_t(k * n + p)], vkq = v[size_t(k * n + q)];
          v[size_t(k * n + p)] = c * vkp - s * vkq, v[size_t(k * n + q)] = s * vkp + c * vkq;
        }
        for (int64_t k = 0; k < n; ++k) {  // rows p, q of A
          const double apk = A(p, k), aqk = A(q, k);
          A(p, k) = c * apk - s * aqk, A(q, k) = s * apk + c * aqk;
        }
      }
  }
  if (!converged) return false;
  // Eigenvector k is column k of V; sort ascending and store as rows.
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) order[size_t(k)] = k;
  std::sort(order.begin(), order.end(), [&](int64_t x, int64_t y) { return A(x, x) < A(y, y); });
  std::vector<double> diag(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k) diag[size_t(k)] = A(k, k);
  for (int64_t k = 0; k < n; ++k) {
    w[k] = diag[size_t(order[size_t(k)])];
    for (int64_t i = 0; i < n; ++i) a[k * n + i] = v[size_t(i * n + order[size_t(k)])];
  }
  return true;
}

// ---- the eigen root ----

InverseRootInfo inverse_root_eigen_cpu(int64_t n, const double* a, const InverseRootConfig& cfg, double* x) {
  check_root_args("inverse_root_eigen", n, cfg);
  InverseRootInfo info;
  const size_t nn = size_t(n * n);
  std::vector<double> v(nn), w(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) v[size_t(i * n + j)] = 0.5 * (a[i * n + j] + a[j * n + i]);
  if (!all_finite(int64_t(nn), a) || !symmetric_eigen_cpu(n, v.data(), w.data())) {
    info.error = info.lambda_max = info.damping = std::numeric_limits<double>::quiet_NaN();
    std::fill(x, x + nn, std::numeric_limits<double>::quiet_NaN());
    return info;
  }
  for (double& e : w) e = std::max(e, 0.0);  // rounding can leave PSD eigenvalues slightly negative
  info.lambda_max = *std::max_element(w.begin(), w.end());
  info.lambda_min = *std::min_element(w.begin(), w.end());
  info.damping = shampoo_damping(info.lambda_max, cfg.eps, cfg.lambda_floor);
  // X = V^T diag(f) V with V's rows the eigenvectors: scale row k by sqrt(f_k), then X = W^T W.
  for (int64_t k = 0; k < n; ++k) {
    const double root = std::sqrt(std::pow(w[size_t(k)] + info.damping, -1.0 / cfg.p));
    for (int64_t i = 0; i < n; ++i) v[size_t(k * n + i)] *= root;
  }
  gemm_cpu<double>(true, false, n, n, n, 1.0, v.data(), n, v.data(), n, 0.0, x, n);
  return info;
}

InverseRootInfo inverse_root_eigen_cpu(int64_t n, const float* a, const InverseRootConfig& cfg, float* x) {
  check_root_args("inverse_root_eigen", n, cfg);
  std::vector<double> ad(a, a + n * n), xd(size_t(n * n));
  const InverseRootInfo info = inverse_root_eigen_cpu(n, ad.data(), cfg, xd.data());
  for (size_t i = 0; i < xd.size(); ++i) x[i] = float(xd[i]);
  return info;
}

// ---- the Newton iteration ----

MatrixPowerPlan matrix_power_plan(int p) {
  KD_CHECK(p >= 1, "matrix_power_plan: p must be >= 1, got ", p);
  MatrixPowerPlan plan;
  int acc = -1, base = 0;  // acc: slot of the product so far (-1: none yet); base: slot of M_i^(2^k)
  auto free_slot = [&] {
    int s = 1;
    while (s == acc || s == base) ++s;
    plan.scratch = std::max(plan.scratch, s);
    return s;
  };
  for (int e = p; e > 0; e >>= 1) {
    if (e & 1) {
      if (acc < 0) {
        acc = base;
      } else {
        const int d = free_slot();
        plan.steps.push_back({d, acc, base});
        acc = d;
      }
    }
    if (e > 1) {
      const int d = free_slot();
      plan.steps.push_back({d, base, base});
      base = d;
    }
  }
  plan.result = acc;
  return plan;
}

double lanczos_lambda_max_cpu(int64_t n, const float* a, int steps) {
  KD_CHECK(n > 0, "lanczos_lambda_max: matrix size n must be positive, got ", n);
  KD_CHECK(steps >= 1, "lanczos_lambda_max: steps must be >= 1, got ", steps);
  steps = int(std::min<int64_t>(steps, n));
  std::vector<float> v(static_cast<size_t>(n)), v_prev(static_cast<size_t>(n), 0.0f), w(static_cast<size_t>(n));
  std::vector<double> alpha, beta;
  double norm = 0;
  for (int64_t i = 0; i < n; ++i) norm += double(lanczos_start(i)) * lanczos_start(i);
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = float(lanczos_start(i) / std::sqrt(norm));
  for (int j = 0; j < steps; ++j) {
    gemm_cpu<float>(false, false, n, 1, n, 1.0f, a, n, v.data(), 1, 0.0f, w.data(), 1);
    double vw = 0, ww = 0;
    for (int64_t i = 0; i < n; ++i) vw += double(v[size_t(i)]) * w[size_t(i)];
    const double beta_prev = j > 0 ? beta.back() : 0.0;
    alpha.push_back(vw);
    for (int64_t i = 0; i < n; ++i) {
      w[size_t(i)] = float(w[size_t(i)] - vw * v[size_t(i)] - beta_prev * v_prev[size_t(i)]);
      ww += double(w[size_t(i)]) * w[size_t(i)];
    }
    const double b = std::sqrt(ww);
    if (!(b > kLanczosBreakdown * (std::fabs(vw) + beta_prev)) || j + 1 == steps) break;  // NaN: stop too
    beta.push_back(b);
    v_prev.swap(v);
    for (int64_t i = 0; i < n; ++i) v[size_t(i)] = float(w[size_t(i)] / b);
  }
  return tridiagonal_max_eigenvalue(int(alpha.size()), alpha.data(), beta.data());
}

InverseRootInfo inverse_root_newton_cpu(int64_t n, const float* a, const InverseRootConfig& cfg, float* x) {
  check_root_args("inverse_root_newton", n, cfg);
  KD_CHECK(cfg.max_iters >= 0 && cfg.lanczos_steps >= 1, "inverse_root_newton: max_iters ", cfg.max_iters,
           " and lanczos_steps ", cfg.lanczos_steps, " must be >= 0 and >= 1");
  KD_CHECK(x != a, "inverse_root_newton: x must not alias a");
  InverseRootInfo info;
  const double theta = lanczos_lambda_max_cpu(n, a, cfg.lanczos_steps);
  info.lambda_max = theta < 0 ? 0.0 : theta;  // NaN stays NaN
  info.damping = shampoo_damping(info.lambda_max, cfg.eps, cfg.lambda_floor);
  double sum_sq = 0, trace = 0;
  for (int64_t i = 0; i < n; ++i) {
    trace += a[i * n + i];
    for (int64_t j = 0; j < n; ++j) sum_sq += double(a[i * n + j]) * a[i * n + j];
  }
  const double fro = std::sqrt(frobenius_sq_damped(sum_sq, trace, info.damping, n));
  const double s = newton_scale(info.lambda_max, info.damping, fro);

  const size_t nn = size_t(n * n);
  const MatrixPowerPlan plan = matrix_power_plan(cfg.p);
  std::vector<float> m(nn), m_new(nn), h(nn, 0.0f), h_new(nn), slots(nn * size_t(plan.scratch + 1));
  auto slot = [&](int k) { return slots.data() + size_t(k) * nn; };
  const float h0 = float(std::pow(s, -1.0 / cfg.p));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j) m[size_t(i * n + j)] = newton_m0_element(a[i * n + j], i == j, info.damping, s);
  for (int64_t i = 0; i < n; ++i) h[size_t(i * n + i)] = h0;
  info.error = identity_error(n, m.data());
  while (info.iterations < cfg.max_iters && info.error > cfg.tolerance) {  // NaN: no iterations
    float* mi = slot(0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) mi[i * n + j] = newton_mi_element(m[size_t(i * n + j)], i == j, cfg.p);
    for (const MatrixPowerPlan::Step& st : plan.steps) matmul(n, slot(st.a), slot(st.b), slot(st.dst));
    matmul(n, slot(plan.result), m.data(), m_new.data());  // M <- M_i^p M
    matmul(n, h.data(), mi, h_new.data());                 // X <- X M_i
    const float new_error = identity_error(n, m_new.data());
    if (!(new_error < kNewtonMaxErrorGrowth * info.error)) break;  // discard it, keep the last
    m.swap(m_new), h.swap(h_new);
    info.error = new_error;
    ++info.iterations;
  }
  std::copy(h.begin(), h.end(), x);
  return info;
}

// ---- direction and grafting ----

template <typename T>
void shampoo_direction_cpu(int64_t rows, int64_t cols, const T* l_inv, const T* g, int64_t ldg, const T* r_inv, T* d,
                           int64_t ldd) {
  KD_CHECK(rows > 0 && cols > 0, "shampoo_direction: block [", rows, ", ", cols, "] must have positive sides");
  KD_CHECK(ldg >= cols && ldd >= cols, "shampoo_direction: ldg ", ldg, " and ldd ", ldd, " must be >= cols ", cols);
  if (!l_inv && !r_inv) {
    for (int64_t i = 0; i < rows; ++i) std::copy(g + i * ldg, g + i * ldg + cols, d + i * ldd);
    return;
  }
  if (!r_inv) return gemm_cpu<T>(false, false, rows, cols, rows, T(1), l_inv, rows, g, ldg, T(0), d, ldd);
  if (!l_inv) return gemm_cpu<T>(false, false, rows, cols, cols, T(1), g, ldg, r_inv, cols, T(0), d, ldd);
  std::vector<T> t(size_t(rows * cols));  // Linv G
  gemm_cpu<T>(false, false, rows, cols, rows, T(1), l_inv, rows, g, ldg, T(0), t.data(), cols);
  gemm_cpu<T>(false, false, rows, cols, cols, T(1), t.data(), cols, r_inv, cols, T(0), d, ldd);
}

template <typename T>
double frobenius_norm_sq_cpu(int64_t rows, int64_t cols, const T* x, int64_t ld) {
  KD_CHECK(rows >= 0 && cols >= 0 && ld >= cols, "frobenius_norm_sq: bad block [", rows, ", ", cols, "] ld ", ld);
  double sum = 0;
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) sum += double(x[i * ld + j]) * double(x[i * ld + j]);
  return sum;
}

#define KD_INSTANTIATE_SHAMPOO(T)                                                                               \
  template void shampoo_stats_update_cpu<T>(int64_t, int64_t, const T*, int64_t, T, T*, T*);                    \
  template void shampoo_direction_cpu<T>(int64_t, int64_t, const T*, const T*, int64_t, const T*, T*, int64_t); \
  template double frobenius_norm_sq_cpu<T>(int64_t, int64_t, const T*, int64_t);
KD_INSTANTIATE_SHAMPOO(float)
KD_INSTANTIATE_SHAMPOO(double)

}  // namespace kd
