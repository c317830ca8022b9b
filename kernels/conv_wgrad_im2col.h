// A convolution's weight gradient as im2col and one GEMM per chunk of images (issue 16 item 2):
//   col[(img, oy, ox), (ky, kx, ci)] = x[img, src_y, src_x, ci]   (0 in the padding)
//   dw[c_out, (ky, kx, ci)] += dy[(img, oy, ox), c_out]^T col
// cuDNN reaches 2-13% of the GEMM rate on the weight gradients of small-channel shapes (the
// stems, 64-channel 3x3s: docs/perf-notes.md): their reduction runs over n * out_h * out_w with
// a small output, which one long-K GEMM (cuBLASLt picks split-K) may take better, after a copy
// of x's patches. On the GPU behind run.conv_wgrad_im2col (off until a GPU has measured it).
#pragma once
#include <cstdint>

#include "kernels/conv.h"

namespace kd {

// Element (row, k) of the column matrix of images [n0, ...): the flat NHWC index into x it copies,
// or -1 where the patch lies in the padding. row = ((img - n0) * out_h + oy) * out_w + ox,
// k = (ky * kw + kx) * c_in + ci. One group only.
KD_HD int64_t im2col_source(const Conv2dShape& s, int64_t n0, int64_t row, int64_t k) {
  const int64_t ci = k % s.c_in, tap = k / s.c_in, kx = tap % s.kw, ky = tap / s.kw;
  const int64_t ox = row % s.out_w(), rest = row / s.out_w(), oy = rest % s.out_h(), img = n0 + rest / s.out_h();
  const int64_t iy = conv_src_y(s, oy, ky), ix = conv_src_x(s, ox, kx);
  if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) return -1;
  return ((img * s.h + iy) * s.w + ix) * s.c_in + ci;
}

// Whether the path applies: one group, not a pointwise convolution (x is its column matrix
// already, and cuDNN's GEMM takes it as it is). Chunks: conv_images_per_chunk (kernels/conv.h).
bool conv_wgrad_im2col_applies(const Conv2dShape& s);

// The same algorithm on the CPU (the column matrix through im2col_source, then gemm_cpu), to
// test the index math and the chunking against conv2d_backward_filter_cpu. dw += the gradient.
template <typename T>
void conv2d_backward_filter_im2col_cpu(const Conv2dShape& s, const T* x, const T* dy, T* dw, int64_t max_elements);

// GPU: bf16 x and dy, fp32 dw (+=). The column matrix lives in a buffer of its own per stream
// (grown on demand, stream-ordered), not in the shared workspace the GEMM uses.
void conv2d_backward_filter_im2col_cuda(const CudaHandles& h, const Conv2dShape& s, const bf16* x, const bf16* dy,
                                        float* dw);

}  // namespace kd
