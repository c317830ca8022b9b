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

// Whether tap (iy, ix) of a window lies in the image. Taps outside are candidates only with
// `pad_with_zero` (a zero, argmax -1); with -inf padding they are skipped.
KD_HD bool maxpool_tap_inside(const MaxPoolShape& s, int64_t iy, int64_t ix) {
  return iy >= 0 && iy < s.h && ix >= 0 && ix < s.w;
}

// Folds one tap into the running maxima of `count` consecutive channels: v holds the tap's values
// (null for a zero-padding tap: zeros whose argmax is -1), base is the argmax of v[0]. The first
// tap of a window initialises best and arg; later ones replace per channel (maxpool_replaces).
template <typename T>
KD_HD void maxpool_fold_tap(bool first, const T* v, int32_t base, int64_t count, T* best, int32_t* arg) {
  for (int64_t ch = 0; ch < count; ++ch) {
    const T value = v ? v[ch] : T(0);
    const bool take = first || maxpool_replaces(value, best[ch]);
    best[ch] = take ? value : best[ch];
    arg[ch] = take ? (v ? base + int32_t(ch) : -1) : arg[ch];
  }
}

// The backward pass as a gather: input position i (along one axis) lies in the windows of the
// outputs o in [first, last] (empty when first > last): those with
// o * stride - pad <= i < o * stride - pad + k, clipped to [0, out).
struct MaxPoolCover {
  int64_t first, last;
};
KD_HD MaxPoolCover maxpool_cover(int64_t i, int64_t k, int64_t stride, int64_t pad, int64_t out) {
  const int64_t past = i + pad - k;  // o * stride must exceed this
  const int64_t first = past < 0 ? 0 : past / stride + 1;
  const int64_t last = (i + pad) / stride;
  return {first, last < out - 1 ? last : out - 1};
}
KD_HD MaxPoolCover maxpool_cover_rows(const MaxPoolShape& s, int64_t iy) {
  return maxpool_cover(iy, s.k, s.stride, s.pad, s.out_h());
}
KD_HD MaxPoolCover maxpool_cover_cols(const MaxPoolShape& s, int64_t ix) {
  return maxpool_cover(ix, s.k, s.stride, s.pad, s.out_w());
}

// One covering output's share of the gradient of `count` consecutive channels of one input
// position: acc[ch] += dy[ch] where that output's argmax is this input (index + ch). Outputs are
// visited in (oy, ox) order, so the sums run in the same order as a scatter over the outputs.
template <typename T>
KD_HD void maxpool_gather_output(const int32_t* arg, const T* dy, int32_t index, int64_t count, T* acc) {
  for (int64_t ch = 0; ch < count; ++ch) acc[ch] += arg[ch] == index + int32_t(ch) ? dy[ch] : T(0);
}

// Coordinates of element i of an NHWC tensor [n, h, w, c]: how the CUDA kernels map a flat
// thread index (times its channel-group width, which divides c) to an image, a pixel and a channel.
struct NhwcPosition {
  int64_t img, y, x, ch;
};
KD_HD NhwcPosition nhwc_position(int64_t i, int64_t h, int64_t w, int64_t c) {
  const int64_t pixel = i / c;
  return {pixel / (h * w), pixel / w % h, pixel % w, i % c};
}

// global average pool backward, flat: element i of dx [n, hw, c] receives dy[global_avgpool_dy_index(i)] / hw.
KD_HD int64_t global_avgpool_dy_index(int64_t i, int64_t hw, int64_t c) { return i / (hw * c) * c + i % c; }

// argmax [n, out_h, out_w, c]: index iy*w*c + ix*c + ch within the image, or -1.
template <typename T>
void maxpool_forward_cpu(const MaxPoolShape& s, const T* x, T* y, int32_t* argmax);
// dx = (overwrite); a gather over the outputs covering each input (maxpool_cover_*)
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
