// A convolution whose input is first scaled, shifted and rectified per channel:
//   y = conv(relu(x * scale + shift), w)
// which is GroupNorm's apply and ReLU moved into the next convolution's operand load (issue 16
// item 1): GroupNorm's statistics make one scale and one shift per sample and channel
// (scale = gamma * rstd[n, group], shift = beta - mean[n, group] * scale), so per_sample tensors
// are [n, c_in]; BatchNorm at inference has one per channel, [1, c_in] (per_sample false), the
// form cuDNN's documented convolution prologue takes. Whether cuDNN's runtime fusion accepts the
// per-sample form is what the GPU test finds out (tests/kernels/conv_prologue_test.cpp).
#pragma once
#include <string>

#include "kernels/conv.h"

namespace kd {

// x NHWC [n, h, w, c_in], w OHWI, y NHWC; scale and shift [per_sample ? n : 1, c_in].
template <typename T>
void conv2d_prologue_forward_cpu(const Conv2dShape& s, bool per_sample, const T* x, const float* scale,
                                 const float* shift, const T* w, T* y);

// cuDNN's graph: three pointwise nodes (multiply, add, ReLU) into the convolution's input, one
// plan per (shape, form, alignment), cached. Throws kd::Error naming cuDNN's answer when no
// engine takes the graph (e.g. "no cuDNN engine for the convolution prologue (...)").
void conv2d_prologue_forward_cuda(const CudaHandles& h, const Conv2dShape& s, bool per_sample, const bf16* x,
                                  const float* scale, const float* shift, const bf16* w, bf16* y);

}  // namespace kd
