#include "kernels/conv_prologue.h"

#include <algorithm>
#include <vector>

#include "kernels/check.h"

namespace kd {

template <typename T>
void conv2d_prologue_forward_cpu(const Conv2dShape& s, bool per_sample, const T* x, const float* scale,
                                 const float* shift, const T* w, T* y) {
  validate(s);
  // The prologue materialised once, then the plain convolution: the reference, not the fused path.
  std::vector<T> input(size_t(s.x_numel()));
  const int64_t pixels = s.h * s.w;
  for (int64_t n = 0; n < s.n; ++n) {
    const float* sc = scale + (per_sample ? n * s.c_in : 0);
    const float* sh = shift + (per_sample ? n * s.c_in : 0);
    for (int64_t p = 0; p < pixels; ++p)
      for (int64_t c = 0; c < s.c_in; ++c) {
        const size_t i = size_t((n * pixels + p) * s.c_in + c);
        input[i] = std::max(T(0), x[i] * T(sc[c]) + T(sh[c]));
      }
  }
  conv2d_forward_cpu<T>(s, input.data(), w, y);
}

template void conv2d_prologue_forward_cpu<float>(const Conv2dShape&, bool, const float*, const float*, const float*,
                                                 const float*, float*);
template void conv2d_prologue_forward_cpu<double>(const Conv2dShape&, bool, const double*, const float*, const float*,
                                                  const double*, double*);

}  // namespace kd
