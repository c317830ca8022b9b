// CPU convolution: im2col + GEMM (OpenBLAS), in chunks of images so the column buffer stays
// bounded; 1x1/stride-1 convolutions are a GEMM on the input itself; convolutions with one input
// channel per group (depthwise) are direct loops.
#include "kernels/conv.h"

#include <algorithm>
#include <sstream>
#include <vector>

#include "kernels/check.h"
#include "kernels/gemm.h"

namespace kd {

std::string Conv2dShape::describe() const {
  std::ostringstream o;
  o << "conv " << kh << "x" << kw << "/" << stride_h;
  if (stride_w != stride_h) o << "," << stride_w;
  o << " pad " << pad_h;
  if (pad_w != pad_h) o << "," << pad_w;
  if (dilation_h != 1 || dilation_w != 1) o << " dil " << dilation_h << "," << dilation_w;
  o << " g" << groups << " [" << n << "," << h << "," << w << "," << c_in << "]->[" << n << "," << out_h() << ","
    << out_w() << "," << c_out << "]";
  return o.str();
}

void validate(const Conv2dShape& s) {
  KD_CHECK(s.n > 0 && s.h > 0 && s.w > 0 && s.c_in > 0 && s.c_out > 0 && s.kh > 0 && s.kw > 0,
           "conv: sizes must be positive: ", s.describe());
  KD_CHECK(s.stride_h > 0 && s.stride_w > 0 && s.dilation_h > 0 && s.dilation_w > 0 && s.pad_h >= 0 &&
               s.pad_w >= 0,
           "conv: stride/dilation must be positive and padding non-negative: ", s.describe());
  KD_CHECK(s.groups > 0 && s.c_in % s.groups == 0 && s.c_out % s.groups == 0, "conv: ", s.groups,
           " groups do not divide c_in ", s.c_in, " and c_out ", s.c_out);
  KD_CHECK(s.out_h() > 0 && s.out_w() > 0, "conv: empty output for ", s.describe());
}

bool conv_is_pointwise(const Conv2dShape& s) {
  return s.kh == 1 && s.kw == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0 &&
         s.groups == 1;
}

int64_t conv_images_per_chunk(const Conv2dShape& s, int64_t max_elements) {
  const int64_t per_image = s.out_h() * s.out_w() * s.kh * s.kw * s.c_in_per_group();
  return std::clamp<int64_t>(max_elements / std::max<int64_t>(per_image, 1), 1, s.n);
}

namespace {

// Images per chunk so that the column buffer holds at most ~8M elements.
int64_t images_per_chunk(const Conv2dShape& s) { return conv_images_per_chunk(s, int64_t(8) << 20); }

template <typename T>
std::vector<T>& column_buffer() {
  thread_local std::vector<T> buffer;
  return buffer;
}

// col[(img, oy, ox), (ky, kx, ci)] = x[img, src_y, src_x, g*cg + ci], zero outside the image.
template <typename T>
void im2col(const Conv2dShape& s, const T* x, int64_t n0, int64_t n1, int64_t g, T* col) {
  const int64_t oh = s.out_h(), ow = s.out_w(), cg = s.c_in_per_group();
  const int64_t K = s.kh * s.kw * cg;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t img = n0; img < n1; ++img)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        T* row = col + (((img - n0) * oh + oy) * ow + ox) * K;
        for (int64_t ky = 0; ky < s.kh; ++ky) {
          const int64_t iy = conv_src_y(s, oy, ky);
          for (int64_t kx = 0; kx < s.kw; ++kx, row += cg) {
            const int64_t ix = conv_src_x(s, ox, kx);
            if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) {
              std::fill(row, row + cg, T(0));
            } else {
              const T* src = x + ((img * s.h + iy) * s.w + ix) * s.c_in + g * cg;
              std::copy(src, src + cg, row);
            }
          }
        }
      }
}

// The adjoint of im2col: dx[img, src_y, src_x, g*cg + ci] += dcol[...]. Images are disjoint,
// so images run in parallel.
template <typename T>
void col2im_add(const Conv2dShape& s, const T* dcol, int64_t n0, int64_t n1, int64_t g, T* dx) {
  const int64_t oh = s.out_h(), ow = s.out_w(), cg = s.c_in_per_group();
  const int64_t K = s.kh * s.kw * cg;
#pragma omp parallel for schedule(static)
  for (int64_t img = n0; img < n1; ++img)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        const T* row = dcol + (((img - n0) * oh + oy) * ow + ox) * K;
        for (int64_t ky = 0; ky < s.kh; ++ky) {
          const int64_t iy = conv_src_y(s, oy, ky);
          for (int64_t kx = 0; kx < s.kw; ++kx, row += cg) {
            const int64_t ix = conv_src_x(s, ox, kx);
            if (iy < 0 || iy >= s.h || ix < 0 || ix >= s.w) continue;
            T* dst = dx + ((img * s.h + iy) * s.w + ix) * s.c_in + g * cg;
            for (int64_t c = 0; c < cg; ++c) dst[c] += row[c];
          }
        }
      }
}

// One input channel per group (depthwise, channel multiplier c_out/c_in): direct loops.
template <typename T>
void depthwise_forward(const Conv2dShape& s, const T* x, const T* w, T* y) {
  const int64_t oh = s.out_h(), ow = s.out_w(), mult = s.c_out / s.c_in, taps = s.kh * s.kw;
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t img = 0; img < s.n; ++img)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        T* out = y + ((img * oh + oy) * ow + ox) * s.c_out;
        std::fill(out, out + s.c_out, T(0));
        for (int64_t ky = 0; ky < s.kh; ++ky) {
          const int64_t iy = conv_src_y(s, oy, ky);
          if (iy < 0 || iy >= s.h) continue;
          for (int64_t kx = 0; kx < s.kw; ++kx) {
            const int64_t ix = conv_src_x(s, ox, kx);
            if (ix < 0 || ix >= s.w) continue;
            const T* in = x + ((img * s.h + iy) * s.w + ix) * s.c_in;
            const T* tap = w + ky * s.kw + kx;
            for (int64_t co = 0; co < s.c_out; ++co) out[co] += in[co / mult] * tap[co * taps];
          }
        }
      }
}

template <typename T>
void depthwise_backward_data(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  const int64_t oh = s.out_h(), ow = s.out_w(), mult = s.c_out / s.c_in, taps = s.kh * s.kw;
  std::fill(dx, dx + s.x_numel(), T(0));
#pragma omp parallel for schedule(static)
  for (int64_t img = 0; img < s.n; ++img)
    for (int64_t oy = 0; oy < oh; ++oy)
      for (int64_t ox = 0; ox < ow; ++ox) {
        const T* g = dy + ((img * oh + oy) * ow + ox) * s.c_out;
        for (int64_t ky = 0; ky < s.kh; ++ky) {
          const int64_t iy = conv_src_y(s, oy, ky);
          if (iy < 0 || iy >= s.h) continue;
          for (int64_t kx = 0; kx < s.kw; ++kx) {
            const int64_t ix = conv_src_x(s, ox, kx);
            if (ix < 0 || ix >= s.w) continue;
            T* d = dx + ((img * s.h + iy) * s.w + ix) * s.c_in;
            const T* tap = w + ky * s.kw + kx;
            for (int64_t co = 0; co < s.c_out; ++co) d[co / mult] += g[co] * tap[co * taps];
          }
        }
      }
}

template <typename T>
void depthwise_backward_filter(const Conv2dShape& s, const T* x, const T* dy, T* dw) {
  const int64_t oh = s.out_h(), ow = s.out_w(), mult = s.c_out / s.c_in, taps = s.kh * s.kw;
  // Each output channel's taps are owned by one thread: no races, deterministic sums.
#pragma omp parallel for schedule(static)
  for (int64_t co = 0; co < s.c_out; ++co) {
    const int64_t ci = co / mult;
    for (int64_t ky = 0; ky < s.kh; ++ky)
      for (int64_t kx = 0; kx < s.kw; ++kx) {
        T acc = 0;
        for (int64_t img = 0; img < s.n; ++img)
          for (int64_t oy = 0; oy < oh; ++oy) {
            const int64_t iy = conv_src_y(s, oy, ky);
            if (iy < 0 || iy >= s.h) continue;
            for (int64_t ox = 0; ox < ow; ++ox) {
              const int64_t ix = conv_src_x(s, ox, kx);
              if (ix < 0 || ix >= s.w) continue;
              acc += x[((img * s.h + iy) * s.w + ix) * s.c_in + ci] * dy[((img * oh + oy) * ow + ox) * s.c_out + co];
            }
          }
        dw[co * taps + ky * s.kw + kx] += acc;
      }
  }
}

}  // namespace

template <typename T>
void conv2d_forward_cpu(const Conv2dShape& s, const T* x, const T* w, T* y) {
  validate(s);
  if (s.c_in_per_group() == 1 && s.groups > 1) return depthwise_forward(s, x, w, y);
  const int64_t M_img = s.out_h() * s.out_w(), cog = s.c_out_per_group();
  const int64_t K = s.kh * s.kw * s.c_in_per_group();
  if (conv_is_pointwise(s)) {
    gemm_cpu<T>(false, true, s.n * M_img, s.c_out, K, T(1), x, K, w, K, T(0), y, s.c_out);
    return;
  }
  const int64_t chunk = images_per_chunk(s);
  std::vector<T>& col = column_buffer<T>();
  col.resize(size_t(chunk * M_img * K));
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    const int64_t n1 = std::min(s.n, n0 + chunk), M = (n1 - n0) * M_img;
    for (int64_t g = 0; g < s.groups; ++g) {
      im2col(s, x, n0, n1, g, col.data());
      gemm_cpu<T>(false, true, M, cog, K, T(1), col.data(), K, w + g * cog * K, K, T(0),
                  y + n0 * M_img * s.c_out + g * cog, s.c_out);
    }
  }
}

template <typename T>
void conv2d_backward_data_cpu(const Conv2dShape& s, const T* dy, const T* w, T* dx) {
  validate(s);
  if (s.c_in_per_group() == 1 && s.groups > 1) return depthwise_backward_data(s, dy, w, dx);
  const int64_t M_img = s.out_h() * s.out_w(), cog = s.c_out_per_group();
  const int64_t K = s.kh * s.kw * s.c_in_per_group();
  if (conv_is_pointwise(s)) {
    gemm_cpu<T>(false, false, s.n * M_img, K, s.c_out, T(1), dy, s.c_out, w, K, T(0), dx, K);
    return;
  }
  std::fill(dx, dx + s.x_numel(), T(0));
  const int64_t chunk = images_per_chunk(s);
  std::vector<T>& dcol = column_buffer<T>();
  dcol.resize(size_t(chunk * M_img * K));
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    const int64_t n1 = std::min(s.n, n0 + chunk), M = (n1 - n0) * M_img;
    for (int64_t g = 0; g < s.groups; ++g) {
      gemm_cpu<T>(false, false, M, K, cog, T(1), dy + n0 * M_img * s.c_out + g * cog, s.c_out, w + g * cog * K, K,
                  T(0), dcol.data(), K);
      col2im_add(s, dcol.data(), n0, n1, g, dx);
    }
  }
}

template <typename T>
void conv2d_backward_filter_cpu(const Conv2dShape& s, const T* x, const T* dy, T* dw) {
  validate(s);
  if (s.c_in_per_group() == 1 && s.groups > 1) return depthwise_backward_filter(s, x, dy, dw);
  const int64_t M_img = s.out_h() * s.out_w(), cog = s.c_out_per_group();
  const int64_t K = s.kh * s.kw * s.c_in_per_group();
  if (conv_is_pointwise(s)) {
    gemm_cpu<T>(true, false, s.c_out, K, s.n * M_img, T(1), dy, s.c_out, x, K, T(1), dw, K);
    return;
  }
  const int64_t chunk = images_per_chunk(s);
  std::vector<T>& col = column_buffer<T>();
  col.resize(size_t(chunk * M_img * K));
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    const int64_t n1 = std::min(s.n, n0 + chunk), M = (n1 - n0) * M_img;
    for (int64_t g = 0; g < s.groups; ++g) {
      im2col(s, x, n0, n1, g, col.data());
      gemm_cpu<T>(true, false, cog, K, M, T(1), dy + n0 * M_img * s.c_out + g * cog, s.c_out, col.data(), K, T(1),
                  dw + g * cog * K, K);
    }
  }
}

#define KD_INSTANTIATE_CONV(T)                                                                 \
  template void conv2d_forward_cpu<T>(const Conv2dShape&, const T*, const T*, T*);             \
  template void conv2d_backward_data_cpu<T>(const Conv2dShape&, const T*, const T*, T*);       \
  template void conv2d_backward_filter_cpu<T>(const Conv2dShape&, const T*, const T*, T*);
KD_INSTANTIATE_CONV(float)
KD_INSTANTIATE_CONV(double)

}  // namespace kd
