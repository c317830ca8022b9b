#include "kernels/conv_fp8.h"

#include <vector>

#include "kernels/check.h"
#include "kernels/fp8.h"

namespace kd {

void conv2d_fp8_forward_cpu(const Conv2dShape& s, const uint8_t* x, const uint8_t* w, const float* descale, float* y) {
  validate(s);
  KD_CHECK(s.groups == 1, "conv2d_fp8_forward: one group only, got ", s.describe());
  std::vector<float> xf(static_cast<size_t>(s.x_numel())), wf(static_cast<size_t>(s.w_numel()));
  for (size_t i = 0; i < xf.size(); ++i) xf[i] = e4m3_to_float(x[i]);
  for (size_t i = 0; i < wf.size(); ++i) wf[i] = e4m3_to_float(w[i]);
  conv2d_forward_cpu<float>(s, xf.data(), wf.data(), y);
  const int64_t pixels = s.y_numel() / s.c_out;
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t o = 0; o < s.c_out; ++o) y[p * s.c_out + o] *= descale[o];
}

}  // namespace kd
