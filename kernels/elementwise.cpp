// Pointwise ops on the CPU: one parallel, vectorisable sweep each. Small arrays stay on the
// calling thread (a parallel region costs more than it saves below ~32k elements). The
// activation is a template argument of the loop, so its switch folds away inside the loop.
#include "kernels/elementwise.h"

#include <vector>

#include "kernels/check.h"
#include "kernels/reduce_cpu.h"

namespace kd {

namespace {

constexpr int64_t kParallelMin = 1 << 15;

void check_count(int64_t n, const char* op) { KD_CHECK(n >= 0, op, ": negative element count ", n); }

template <Activation A, typename T>
void forward_loop(int64_t n, const T* x, T* y) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = activation_apply(A, x[i]);
}

template <Activation A, typename T>
void backward_loop(int64_t n, const T* x, const T* dy, T* dx) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * activation_derivative(A, x[i]);
}

}  // namespace

template <typename T>
void activation_forward_cpu(Activation a, int64_t n, const T* x, T* y) {
  check_count(n, "activation_forward");
  switch (a) {
    case Activation::identity: return forward_loop<Activation::identity>(n, x, y);
    case Activation::relu: return forward_loop<Activation::relu>(n, x, y);
    case Activation::hardswish: return forward_loop<Activation::hardswish>(n, x, y);
    case Activation::sigmoid: return forward_loop<Activation::sigmoid>(n, x, y);
    case Activation::hardsigmoid: return forward_loop<Activation::hardsigmoid>(n, x, y);
  }
  KD_FAIL("activation_forward: unknown activation ", int(a));
}

template <typename T>
void activation_backward_cpu(Activation a, int64_t n, const T* x, const T* dy, T* dx) {
  check_count(n, "activation_backward");
  switch (a) {
    case Activation::identity: return backward_loop<Activation::identity>(n, x, dy, dx);
    case Activation::relu: return backward_loop<Activation::relu>(n, x, dy, dx);
    case Activation::hardswish: return backward_loop<Activation::hardswish>(n, x, dy, dx);
    case Activation::sigmoid: return backward_loop<Activation::sigmoid>(n, x, dy, dx);
    case Activation::hardsigmoid: return backward_loop<Activation::hardsigmoid>(n, x, dy, dx);
  }
  KD_FAIL("activation_backward: unknown activation ", int(a));
}

template <typename T>
void add_cpu(int64_t n, const T* a, const T* b, T* y) {
  check_count(n, "add");
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i];
}

template <typename T>
void bias_add_cpu(int64_t rows, int64_t c, const T* bias, T* y) {
  KD_CHECK(rows >= 0 && c > 0, "bias_add: bad shape [", rows, ", ", c, "]");
#pragma omp parallel for schedule(static) if (rows * c >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t ch = 0; ch < c; ++ch) y[r * c + ch] += bias[ch];
}

template <typename T>
void bias_backward_cpu(int64_t rows, int64_t c, const T* dy, T* dbias) {
  KD_CHECK(rows >= 0 && c > 0, "bias_backward: bad shape [", rows, ", ", c, "]");
  std::vector<double> sums(static_cast<size_t>(c));
  sum_rows_cpu(
      rows, c,
      [&](int64_t r, double* acc) {
        for (int64_t ch = 0; ch < c; ++ch) acc[ch] += double(dy[r * c + ch]);
      },
      sums.data());
  for (int64_t ch = 0; ch < c; ++ch) dbias[ch] += T(sums[size_t(ch)]);
}

#define KD_INSTANTIATE_ELEMENTWISE(T)                                                    \
  template void activation_forward_cpu<T>(Activation, int64_t, const T*, T*);            \
  template void activation_backward_cpu<T>(Activation, int64_t, const T*, const T*, T*); \
  template void add_cpu<T>(int64_t, const T*, const T*, T*);                             \
  template void bias_add_cpu<T>(int64_t, int64_t, const T*, T*);                         \
  template void bias_backward_cpu<T>(int64_t, int64_t, const T*, T*);
KD_INSTANTIATE_ELEMENTWISE(float)
KD_INSTANTIATE_ELEMENTWISE(double)

}  // namespace kd
