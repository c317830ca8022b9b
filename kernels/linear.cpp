// Fully connected layer on the CPU: three GEMMs (OpenBLAS when built with it) and the bias
// kernels of elementwise.h. Row-major x [rows, in], W [out, in], y [rows, out]:
//   y  = x W^T (+ b)      dx = dy W      dW += dy^T x      db += sum over rows of dy
#include "kernels/linear.h"

#include "kernels/check.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"

namespace kd {

namespace {

void validate(const LinearShape& s) {
  KD_CHECK(s.rows > 0 && s.in > 0 && s.out > 0, "linear: sizes must be positive, got rows ", s.rows, ", in ", s.in,
           ", out ", s.out);
}

}  // namespace

template <typename T>
void linear_forward_cpu(const LinearShape& s, const T* x, const T* w, const T* bias, T* y) {
  validate(s);
  gemm_cpu<T>(false, true, s.rows, s.out, s.in, T(1), x, s.in, w, s.in, T(0), y, s.out);
  if (bias) bias_add_cpu<T>(s.rows, s.out, bias, y);
}

template <typename T>
void linear_backward_cpu(const LinearShape& s, const T* x, const T* w, const T* dy, T* dx, T* dw, T* dbias) {
  validate(s);
  if (dx) gemm_cpu<T>(false, false, s.rows, s.in, s.out, T(1), dy, s.out, w, s.in, T(0), dx, s.in);
  gemm_cpu<T>(true, false, s.out, s.in, s.rows, T(1), dy, s.out, x, s.in, T(1), dw, s.in);
  if (dbias) bias_backward_cpu<T>(s.rows, s.out, dy, dbias);
}

#define KD_INSTANTIATE_LINEAR(T)                                                                  \
  template void linear_forward_cpu<T>(const LinearShape&, const T*, const T*, const T*, T*);      \
  template void linear_backward_cpu<T>(const LinearShape&, const T*, const T*, const T*, T*, T*, T*);
KD_INSTANTIATE_LINEAR(float)
KD_INSTANTIATE_LINEAR(double)

}  // namespace kd
