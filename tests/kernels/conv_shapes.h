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

// One group's convolution output at (n, p, q, o) [NHWC, OHWI] by direct summation in double over
// the taps inside the image: input(i) and weight(i) give the values at flat element indices of x
// and w, so a test can decode or transform them on the way.
template <typename Input, typename Weight>
double direct_conv_output(const Conv2dShape& s, int64_t n, int64_t p, int64_t q, int64_t o, Input input,
                          Weight weight) {
  double sum = 0;
  for (int64_t ky = 0; ky < s.kh; ++ky)
    for (int64_t kx = 0; kx < s.kw; ++kx) {
      const int64_t iy = conv_src_y(s, p, ky), ix = conv_src_x(s, q, kx);
      if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
      for (int64_t c = 0; c < s.c_in; ++c)
        sum += double(input(((n * s.h + iy) * s.w + ix) * s.c_in + c)) *
               double(weight(((o * s.kh + ky) * s.kw + kx) * s.c_in + c));
    }
  return sum;
}

}  // namespace kd::test
