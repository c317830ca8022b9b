// Square convolution shapes for the convolution tests (CPU reference, oneDNN, cuDNN).
#pragma once
#include "kernels/conv.h"

namespace kd::test {

inline Conv2dShape conv_shape(int64_t n, int64_t h, int64_t w, int64_t cin, int64_t cout, int64_t k, int64_t stride,
                              int64_t pad, int64_t groups = 1, int64_t dilation = 1) {
  Conv2dShape s;
  s.n = n, s.h = h, s.w = w, s.c_in = cin, s.c_out = cout, s.kh = s.kw = k;
  s.stride_h = s.stride_w = stride, s.pad_h = s.pad_w = pad, s.groups = groups;
  s.dilation_h = s.dilation_w = dilation;
  return s;
}

}  // namespace kd::test
