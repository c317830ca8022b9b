// Pooling on the CPU, NHWC: every output pixel reads whole channel vectors, so the innermost loop
// runs over contiguous channels. Max-pool: output rows of all images in parallel; for each output
// pixel the taps are visited in (ky, kx) order, the first tap initialising the maximum and later
// taps replacing it per channel only when strictly larger (ties keep the first, as PyTorch).
// With `pad_with_zero`, a tap in the padding is a candidate of value 0 whose argmax is -1; with
// -inf padding such taps are skipped. The per-tap and per-output steps are pool.h's KD_HD
// functions, which the CUDA kernels run too; the backward pass is the kernels' gather.
#include "kernels/pool.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "kernels/check.h"

namespace kd {

namespace {

std::string describe(const MaxPoolShape& s) {
  return detail::concat("maxpool ", s.k, "x", s.k, "/", s.stride, " pad ", s.pad, s.pad_with_zero ? " (zeros)" : "",
                        " [", s.n, ",", s.h, ",", s.w, ",", s.c, "]");
}

}  // namespace

void validate(const MaxPoolShape& s) {
  KD_CHECK(s.n > 0 && s.h > 0 && s.w > 0 && s.c > 0, "maxpool: sizes must be positive: ", describe(s));
  KD_CHECK(s.k > 0 && s.stride > 0 && s.pad >= 0, "maxpool: kernel and stride must be positive, padding >= 0: ",
           describe(s));
  // As PyTorch: with -inf padding a window must hold at least one pixel of the image.
  KD_CHECK(s.pad_with_zero || 2 * s.pad <= s.k, "maxpool: padding ", s.pad, " exceeds half the window ", s.k, ": ",
           describe(s));
  KD_CHECK(s.out_h() > 0 && s.out_w() > 0 && s.h + 2 * s.pad >= s.k && s.w + 2 * s.pad >= s.k,
           "maxpool: empty output: ", describe(s));
  KD_CHECK(s.h * s.w * s.c <= std::numeric_limits<int32_t>::max(), "maxpool: image too large for int32 argmax: ",
           describe(s));
}

template <typename T>
void maxpool_forward_cpu(const MaxPoolShape& s, const T* x, T* y, int32_t* argmax) {
  validate(s);
  const int64_t oh = s.out_h(), ow = s.out_w(), c = s.c;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t img = 0; img < s.n; ++img)
    for (int64_t oy = 0; oy < oh; ++oy) {
      const T* xi = x + img * s.h * s.w * c;
      const int64_t y0 = maxpool_window_start(s, oy);
      for (int64_t ox = 0; ox < ow; ++ox) {
        const int64_t x0 = maxpool_window_start(s, ox), out = ((img * oh + oy) * ow + ox) * c;
        T* best = y + out;
        int32_t* arg = argmax + out;
        bool first = true;
        for (int64_t iy = y0; iy < y0 + s.k; ++iy)
          for (int64_t ix = x0; ix < x0 + s.k; ++ix) {
            const bool inside = maxpool_tap_inside(s, iy, ix);
            if (!inside && !s.pad_with_zero) continue;
            // The candidates: the pixel's channels, or zeros with argmax -1 for a padding tap.
            if (inside)
              maxpool_fold_tap(first, xi + (iy * s.w + ix) * c, maxpool_index(s, iy, ix, 0), c, best, arg);
            else
              maxpool_fold_tap<T>(first, nullptr, -1, c, best, arg);
            first = false;
          }
      }
    }
}

template <typename T>
void maxpool_backward_cpu(const MaxPoolShape& s, const int32_t* argmax, const T* dy, T* dx) {
  validate(s);
  const int64_t oh = s.out_h(), ow = s.out_w(), c = s.c;
  // A gather, as the CUDA kernel: each input position sums the outputs whose windows cover it and
  // whose argmax points at it, in (oy, ox) order. Input rows run in parallel, race-free, and
  // overlapping windows (k > stride) need no atomics.
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t img = 0; img < s.n; ++img)
    for (int64_t iy = 0; iy < s.h; ++iy) {
      const int32_t* ai = argmax + img * oh * ow * c;
      const T* dyi = dy + img * oh * ow * c;
      const MaxPoolCover rows = maxpool_cover_rows(s, iy);
      for (int64_t ix = 0; ix < s.w; ++ix) {
        T* acc = dx + ((img * s.h + iy) * s.w + ix) * c;
        std::fill(acc, acc + c, T(0));
        const MaxPoolCover cols = maxpool_cover_cols(s, ix);
        for (int64_t oy = rows.first; oy <= rows.last; ++oy)
          for (int64_t ox = cols.first; ox <= cols.last; ++ox) {
            const int64_t o = (oy * ow + ox) * c;
            maxpool_gather_output(ai + o, dyi + o, maxpool_index(s, iy, ix, 0), c, acc);
          }
      }
    }
}

template <typename T>
void global_avgpool_forward_cpu(int64_t n, int64_t hw, int64_t c, const T* x, T* y) {
  KD_CHECK(n > 0 && hw > 0 && c > 0, "global_avgpool: sizes must be positive, got [", n, ", ", hw, ", ", c, "]");
#pragma omp parallel
  {
    std::vector<double> sums(static_cast<size_t>(c));
#pragma omp for schedule(static)
    for (int64_t img = 0; img < n; ++img) {
      std::fill(sums.begin(), sums.end(), 0.0);
      const T* xi = x + img * hw * c;
      for (int64_t p = 0; p < hw; ++p)
        for (int64_t ch = 0; ch < c; ++ch) sums[size_t(ch)] += double(xi[p * c + ch]);
      for (int64_t ch = 0; ch < c; ++ch) y[img * c + ch] = T(sums[size_t(ch)] / double(hw));
    }
  }
}

template <typename T>
void global_avgpool_backward_cpu(int64_t n, int64_t hw, int64_t c, const T* dy, T* dx) {
  KD_CHECK(n > 0 && hw > 0 && c > 0, "global_avgpool: sizes must be positive, got [", n, ", ", hw, ", ", c, "]");
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n * hw * c; ++i) dx[i] = dy[global_avgpool_dy_index(i, hw, c)] / T(hw);
}

#define KD_INSTANTIATE_POOL(T)                                                                 \
  template void maxpool_forward_cpu<T>(const MaxPoolShape&, const T*, T*, int32_t*);           \
  template void maxpool_backward_cpu<T>(const MaxPoolShape&, const int32_t*, const T*, T*);    \
  template void global_avgpool_forward_cpu<T>(int64_t, int64_t, int64_t, const T*, T*);        \
  template void global_avgpool_backward_cpu<T>(int64_t, int64_t, int64_t, const T*, T*);
KD_INSTANTIATE_POOL(float)
KD_INSTANTIATE_POOL(double)

}  // namespace kd
