// Zero-padding the last dimension of a [rows, c] tensor to [rows, c_pad] and slicing it back
// (issue 16, item 2: the 7x7 stem on 3 channels as a convolution on 8, which cuDNN's tensor-core
// engines take; 3-channel bf16 stems ran at 2.6-6.6% of the GEMM floor on the H100 and H200).
// An NHWC activation [n, h, w, c] and an OHWI weight [c_out, kh, kw, c] are both such row
// matrices, so one op pads a convolution's input and weights (engine/ops.cpp, behind
// run.conv_pad_channels) and slices its weight and input gradients back.
//
//   pad:   y[r, j] = x[r, j] for j < c, 0 for c <= j < c_pad      (y has rows * c_pad elements)
//   slice: y[r, j] = x[r, j] for j < c                           (x has rows * c_pad elements)
#pragma once
#include <cstdint>

#include "kernels/common.h"
#include "kernels/cuda_handles.h"

namespace kd {

// Element of x that element i of the padded y copies, or -1 where y is zero.
KD_HD int64_t channel_pad_source(int64_t i, int64_t c, int64_t c_pad) {
  const int64_t j = i % c_pad;
  return j < c ? (i / c_pad) * c + j : -1;
}
// Element of the padded x that element i of the sliced y copies.
KD_HD int64_t channel_slice_source(int64_t i, int64_t c, int64_t c_pad) { return (i / c) * c_pad + i % c; }

// Throws naming the op when rows < 0, c < 1 or c_pad < c.
void validate_channel_pad(int64_t rows, int64_t c, int64_t c_pad, const char* op);

template <typename T>
void pad_channels_cpu(int64_t rows, int64_t c, int64_t c_pad, const T* x, T* y);
template <typename T>
void slice_channels_cpu(int64_t rows, int64_t c, int64_t c_pad, const T* x, T* y);

// T = bf16 (activations, compute weights) or float (fp32 weight gradients).
template <typename T>
void pad_channels_cuda(const CudaHandles& h, int64_t rows, int64_t c, int64_t c_pad, const T* x, T* y);
template <typename T>
void slice_channels_cuda(const CudaHandles& h, int64_t rows, int64_t c, int64_t c_pad, const T* x, T* y);

}  // namespace kd
