// Pooling over NHWC. Max-pool keeps, for the backward pass, the flat index (within the image,
// h*w*c + ...) of the input that won each output, or -1 when a padding position won.
// Padding: PyTorch's MaxPool2d pads with -inf; BiT's "fixed" stem pads with zeros first
// (ConstantPad2d(1, 0) then a pad-0 pool), where a zero in the padding can win: `pad_with_zero`.
// Ties go to the first maximum in (ky, kx) scan order, as PyTorch.
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

struct MaxPoolShape {
  int64_t n = 1, h = 1, w = 1, c = 1;
  int64_t k = 3, stride = 2, pad = 0;
  bool pad_with_zero = false;
  KD_HD int64_t out_h() const { return (h + 2 * pad - k) / stride + 1; }
  KD_HD int64_t out_w() const { return (w + 2 * pad - k) / stride + 1; }
  KD_HD int64_t y_numel() const { return n * out_h() * out_w() * c; }
};

// Throws kd::Error naming the problem (empty output, -inf padding wider than half the window,
// an image too large for int32 argmax indices, ...).
void validate(const MaxPoolShape& s);

// Output row oy (column ox) pools input rows (columns) [start, start + k), before clipping to the
// image; positions outside are padding.
KD_HD int64_t maxpool_window_start(const MaxPoolShape& s, int64_t o) { return o * s.stride - s.pad; }
// Position of input (iy, ix, ch) within its image: what argmax stores.
KD_HD int32_t maxpool_index(const MaxPoolShape& s, int64_t iy, int64_t ix, int64_t ch) {
  return int32_t((iy * s.w + ix) * s.c + ch);
}
// Whether candidate v, met later in scan order, replaces the running maximum: only if strictly
// larger (ties keep the first), or NaN (NaN propagates, as in PyTorch).
template <typename T>
KD_HD bool maxpool_replaces(T v, T best) {
  return v > best || v != v;
}

// argmax [n, out_h, out_w, c]: index iy*w*c + ix*c + ch within the image, or -1.
template <typename T>
void maxpool_forward_cpu(const MaxPoolShape& s, const T* x, T* y, int32_t* argmax);
// dx = (overwrite)
template <typename T>
void maxpool_backward_cpu(const MaxPoolShape& s, const int32_t* argmax, const T* dy, T* dx);

// y[n, c] = mean over hw of x[n, hw, c]
template <typename T>
void global_avgpool_forward_cpu(int64_t n, int64_t hw, int64_t c, const T* x, T* y);
// dx[n, hw, c] = dy[n, c] / hw
template <typename T>
void global_avgpool_backward_cpu(int64_t n, int64_t hw, int64_t c, const T* dy, T* dx);

// CUDA: bf16 activations. argmax may be null in the forward pass (inference).
void maxpool_forward_cuda(const CudaHandles& h, const MaxPoolShape& s, const bf16* x, bf16* y, int32_t* argmax);
void maxpool_backward_cuda(const CudaHandles& h, const MaxPoolShape& s, const int32_t* argmax, const bf16* dy,
                           bf16* dx);
void global_avgpool_forward_cuda(const CudaHandles& h, int64_t n, int64_t hw, int64_t c, const bf16* x, bf16* y);
void global_avgpool_backward_cuda(const CudaHandles& h, int64_t n, int64_t hw, int64_t c, const bf16* dy, bf16* dx);

}  // namespace kd
