#include "kernels/conv_wgrad_im2col.h"

#include <algorithm>
#include <vector>

#include "kernels/check.h"
#include "kernels/gemm.h"

namespace kd {

bool conv_wgrad_im2col_applies(const Conv2dShape& s) { return s.groups == 1 && !conv_is_pointwise(s); }

template <typename T>
void conv2d_backward_filter_im2col_cpu(const Conv2dShape& s, const T* x, const T* dy, T* dw, int64_t max_elements) {
  validate(s);
  KD_CHECK(conv_wgrad_im2col_applies(s), "conv2d_backward_filter_im2col: not for ", s.describe());
  const int64_t rows_per_image = s.out_h() * s.out_w(), K = s.kh * s.kw * s.c_in;
  const int64_t chunk = conv_images_per_chunk(s, max_elements);
  std::vector<T> col(size_t(chunk * rows_per_image * K));
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    const int64_t rows = (std::min(s.n, n0 + chunk) - n0) * rows_per_image;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t src = im2col_source(s, n0, r, k);
        col[size_t(r * K + k)] = src < 0 ? T(0) : x[src];
      }
    gemm_cpu<T>(true, false, s.c_out, K, rows, T(1), dy + n0 * rows_per_image * s.c_out, s.c_out, col.data(), K, T(1),
                dw, K);
  }
}

template void conv2d_backward_filter_im2col_cpu<float>(const Conv2dShape&, const float*, const float*, float*, int64_t);
template void conv2d_backward_filter_im2col_cpu<double>(const Conv2dShape&, const double*, const double*, double*,
                                                        int64_t);

}  // namespace kd
