// Pointwise ops on bf16 tensors: fp32 math through elementwise.h's activation_apply and
// activation_derivative (the CPU loops' own arithmetic), rounded once to bf16 with common.h's
// float_to_bf16. A kernel sweeps 8-element (16-byte) vectors when every pointer is 16-byte
// aligned, then the remaining elements one at a time; with any pointer misaligned, all of them one
// at a time. An output may alias an input (in-place activation, y = a + y): each element is read
// by the thread that writes it, before it writes it.
#include "kernels/cuda_check.h"
#include "kernels/cuda_vector.h"
#include "kernels/elementwise.h"

namespace kd {
namespace {

constexpr int kWidth = 8;  // bf16 per 16-byte vector
using Bf16x8 = gpu::Vec<bf16, kWidth>;

template <Activation A>
struct ForwardOp {
  __device__ bf16 operator()(bf16 x) const { return float_to_bf16(activation_apply(A, bf16_to_float(x))); }
};

// dx = dy * act'(x), as backward_loop in elementwise.cpp.
template <Activation A>
struct BackwardOp {
  __device__ bf16 operator()(bf16 x, bf16 dy) const {
    return float_to_bf16(bf16_to_float(dy) * activation_derivative(A, bf16_to_float(x)));
  }
};

struct AddOp {
  __device__ bf16 operator()(bf16 a, bf16 b) const { return float_to_bf16(bf16_to_float(a) + bf16_to_float(b)); }
};

// y = op(a): `vectors` whole vectors first, then elements [vectors * 8, n).
template <typename Op>
__global__ void unary_kernel(Op op, int64_t n, int64_t vectors, const bf16* a, bf16* y) {
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = first; i < vectors; i += stride) {
    const Bf16x8 av = reinterpret_cast<const Bf16x8*>(a)[i];
    Bf16x8 yv;
#pragma unroll
    for (int j = 0; j < kWidth; ++j) yv.v[j] = op(av.v[j]);
    reinterpret_cast<Bf16x8*>(y)[i] = yv;
  }
  for (int64_t i = vectors * kWidth + first; i < n; i += stride) y[i] = op(a[i]);
}

// y = op(a, b), swept as unary_kernel.
template <typename Op>
__global__ void binary_kernel(Op op, int64_t n, int64_t vectors, const bf16* a, const bf16* b, bf16* y) {
  const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = first; i < vectors; i += stride) {
    const Bf16x8 av = reinterpret_cast<const Bf16x8*>(a)[i];
    const Bf16x8 bv = reinterpret_cast<const Bf16x8*>(b)[i];
    Bf16x8 yv;
#pragma unroll
    for (int j = 0; j < kWidth; ++j) yv.v[j] = op(av.v[j], bv.v[j]);
    reinterpret_cast<Bf16x8*>(y)[i] = yv;
  }
  for (int64_t i = vectors * kWidth + first; i < n; i += stride) y[i] = op(a[i], b[i]);
}

// Whole 16-byte vectors when all pointers allow them, else none.
int64_t vector_count(int64_t n, std::initializer_list<const void*> pointers) {
  for (const void* p : pointers)
    if (!gpu::aligned_to(p, sizeof(Bf16x8))) return 0;
  return n / kWidth;
}

template <typename Op>
void launch_unary(const CudaHandles& h, const char* name, Op op, int64_t n, const bf16* a, bf16* y) {
  const int64_t vectors = vector_count(n, {a, y});
  unary_kernel<<<gpu::grid_for(h, vectors + (n - vectors * kWidth)), gpu::kThreads, 0, h.stream>>>(op, n, vectors,
                                                                                                    a, y);
  KD_CUDA_LAUNCH_CHECK(name);
}

template <typename Op>
void launch_binary(const CudaHandles& h, const char* name, Op op, int64_t n, const bf16* a, const bf16* b, bf16* y) {
  const int64_t vectors = vector_count(n, {a, b, y});
  binary_kernel<<<gpu::grid_for(h, vectors + (n - vectors * kWidth)), gpu::kThreads, 0, h.stream>>>(
      op, n, vectors, a, b, y);
  KD_CUDA_LAUNCH_CHECK(name);
}

}  // namespace

void activation_forward_cuda(const CudaHandles& h, Activation a, int64_t n, const bf16* x, bf16* y) {
  KD_CHECK(n >= 0, "activation_forward_cuda: negative element count ", n);
  if (n == 0) return;
  switch (a) {
    case Activation::identity: return launch_unary(h, "activation_forward identity", ForwardOp<Activation::identity>{}, n, x, y);
    case Activation::relu: return launch_unary(h, "activation_forward relu", ForwardOp<Activation::relu>{}, n, x, y);
    case Activation::hardswish:
      return launch_unary(h, "activation_forward hardswish", ForwardOp<Activation::hardswish>{}, n, x, y);
    case Activation::sigmoid: return launch_unary(h, "activation_forward sigmoid", ForwardOp<Activation::sigmoid>{}, n, x, y);
    case Activation::hardsigmoid:
      return launch_unary(h, "activation_forward hardsigmoid", ForwardOp<Activation::hardsigmoid>{}, n, x, y);
  }
  KD_FAIL("activation_forward_cuda: unknown activation ", int(a));
}

void activation_backward_cuda(const CudaHandles& h, Activation a, int64_t n, const bf16* x, const bf16* dy,
                              bf16* dx) {
  KD_CHECK(n >= 0, "activation_backward_cuda: negative element count ", n);
  if (n == 0) return;
  switch (a) {
    case Activation::identity:
      return launch_binary(h, "activation_backward identity", BackwardOp<Activation::identity>{}, n, x, dy, dx);
    case Activation::relu: return launch_binary(h, "activation_backward relu", BackwardOp<Activation::relu>{}, n, x, dy, dx);
    case Activation::hardswish:
      return launch_binary(h, "activation_backward hardswish", BackwardOp<Activation::hardswish>{}, n, x, dy, dx);
    case Activation::sigmoid:
      return launch_binary(h, "activation_backward sigmoid", BackwardOp<Activation::sigmoid>{}, n, x, dy, dx);
    case Activation::hardsigmoid:
      return launch_binary(h, "activation_backward hardsigmoid", BackwardOp<Activation::hardsigmoid>{}, n, x, dy, dx);
  }
  KD_FAIL("activation_backward_cuda: unknown activation ", int(a));
}

void add_cuda(const CudaHandles& h, int64_t n, const bf16* a, const bf16* b, bf16* y) {
  KD_CHECK(n >= 0, "add_cuda: negative element count ", n);
  if (n == 0) return;
  launch_binary(h, "add", AddOp{}, n, a, b, y);
}

}  // namespace kd
