// Pointwise ops: activations (forward and backward from the input), add, bias add, and the
// scalar math shared by the CPU loops and the CUDA kernels.
#pragma once
#include <cmath>
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

enum class Activation : uint8_t { identity, relu, hardswish, sigmoid, hardsigmoid };

// hardswish(x) = x * relu6(x + 3) / 6 (PyTorch's definition, also for its gradient at the kinks:
// d/dx = 0 for x < -3, 1 for x > 3, (2x + 3) / 6 in between, PyTorch's choice at +-3).
// hardsigmoid(x) = relu6(x + 3) / 6 (F.hardsigmoid, MobileNetV3's squeeze-excite gate); PyTorch's
// gradient is 1/6 strictly inside (-3, 3) and 0 at and beyond +-3.
template <typename T>
KD_HD T activation_apply(Activation a, T x) {
  switch (a) {
    case Activation::relu: return x > T(0) ? x : T(0);
    case Activation::hardswish: return x <= T(-3) ? T(0) : x >= T(3) ? x : x * (x + T(3)) / T(6);
    case Activation::sigmoid: return T(1) / (T(1) + exp(-x));
    case Activation::hardsigmoid: return x <= T(-3) ? T(0) : x >= T(3) ? T(1) : (x + T(3)) / T(6);
    case Activation::identity: break;
  }
  return x;
}

// d activation / d x, at input x.
template <typename T>
KD_HD T activation_derivative(Activation a, T x) {
  switch (a) {
    case Activation::relu: return x > T(0) ? T(1) : T(0);
    case Activation::hardswish: return x < T(-3) ? T(0) : x > T(3) ? T(1) : (T(2) * x + T(3)) / T(6);
    case Activation::sigmoid: {
      const T s = T(1) / (T(1) + exp(-x));
      return s * (T(1) - s);
    }
    case Activation::hardsigmoid: return x > T(-3) && x < T(3) ? T(1) / T(6) : T(0);
    case Activation::identity: break;
  }
  return T(1);
}

template <typename T>
void activation_forward_cpu(Activation a, int64_t n, const T* x, T* y);
// dx = dy * act'(x)
template <typename T>
void activation_backward_cpu(Activation a, int64_t n, const T* x, const T* dy, T* dx);

// y = a + b (y may alias a or b)
template <typename T>
void add_cpu(int64_t n, const T* a, const T* b, T* y);
// y[r, c] += bias[c] over rows x [rows, c]
template <typename T>
void bias_add_cpu(int64_t rows, int64_t c, const T* bias, T* y);
// dbias[c] += sum over rows of dy[r, c]
template <typename T>
void bias_backward_cpu(int64_t rows, int64_t c, const T* dy, T* dbias);

// CUDA: bf16 in and out, fp32 math.
void activation_forward_cuda(const CudaHandles& h, Activation a, int64_t n, const bf16* x, bf16* y);
void activation_backward_cuda(const CudaHandles& h, Activation a, int64_t n, const bf16* x, const bf16* dy, bf16* dx);
void add_cuda(const CudaHandles& h, int64_t n, const bf16* a, const bf16* b, bf16* y);

}  // namespace kd
