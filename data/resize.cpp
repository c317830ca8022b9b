#include "data/resize.h"

#include <algorithm>
#include <cmath>

namespace kd {

ResizeFilter parse_resize_filter(const std::string& name) {
  if (name == "bilinear") return ResizeFilter::bilinear;
  if (name == "bicubic") return ResizeFilter::bicubic;
  if (name == "area") return ResizeFilter::area;
  KD_FAIL("unknown resize filter '", name, "' (use bilinear, bicubic or area)");
}

namespace {
double filter_value(ResizeFilter f, double x) {
  x = std::fabs(x);
  if (f == ResizeFilter::bilinear) return x < 1 ? 1 - x : 0;
  const double a = -0.5;  // PIL's and PyTorch's antialiased bicubic
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}
}  // namespace

ResizeTaps resize_taps(int64_t in, int64_t out, ResizeFilter filter) {
  KD_CHECK(in > 0 && out > 0, "resize: sizes must be positive, got ", in, " -> ", out);
  ResizeTaps t;
  const double scale = double(in) / double(out);
  for (int64_t i = 0; i < out; ++i) {
    t.offset.push_back(int64_t(t.weights.size()));
    if (filter == ResizeFilter::area) {  // adaptive average pooling: [floor(i s), ceil((i + 1) s))
      const int64_t lo = (i * in) / out, hi = ((i + 1) * in + out - 1) / out;
      t.first.push_back(int32_t(lo));
      t.count.push_back(int32_t(hi - lo));
      for (int64_t j = lo; j < hi; ++j) t.weights.push_back(float(1.0 / double(hi - lo)));
      continue;
    }
    const double support = (filter == ResizeFilter::bicubic ? 2.0 : 1.0) * std::max(scale, 1.0);
    const double invscale = scale >= 1.0 ? 1.0 / scale : 1.0;
    const double centre = scale * (double(i) + 0.5);
    const int64_t lo = std::max<int64_t>(int64_t(centre - support + 0.5), 0);
    const int64_t hi = std::min<int64_t>(int64_t(centre + support + 0.5), in);
    std::vector<double> w;
    double total = 0;
    for (int64_t j = lo; j < hi; ++j) {
      w.push_back(filter_value(filter, (double(j) - centre + 0.5) * invscale));
      total += w.back();
    }
    t.first.push_back(int32_t(lo));
    t.count.push_back(int32_t(hi - lo));
    for (double v : w) t.weights.push_back(float(total != 0 ? v / total : 0.0));
  }
  return t;
}

std::vector<float> resize_hwc(const float* in, int64_t h, int64_t w, int64_t c, int64_t out_h, int64_t out_w,
                              ResizeFilter filter) {
  const ResizeTaps ty = resize_taps(h, out_h, filter), tx = resize_taps(w, out_w, filter);
  std::vector<float> rows(size_t(out_h * w * c), 0.0f), out(size_t(out_h * out_w * c), 0.0f);
  for (int64_t oy = 0; oy < out_h; ++oy)  // vertical pass: [out_h, w, c]
    for (int32_t k = 0; k < ty.count[size_t(oy)]; ++k) {
      const float wk = ty.weights[size_t(ty.offset[size_t(oy)] + k)];
      const float* src = in + (ty.first[size_t(oy)] + k) * w * c;
      float* dst = rows.data() + oy * w * c;
      for (int64_t i = 0; i < w * c; ++i) dst[i] += wk * src[i];
    }
  for (int64_t oy = 0; oy < out_h; ++oy)  // horizontal pass
    for (int64_t ox = 0; ox < out_w; ++ox)
      for (int32_t k = 0; k < tx.count[size_t(ox)]; ++k) {
        const float wk = tx.weights[size_t(tx.offset[size_t(ox)] + k)];
        const float* src = rows.data() + (oy * w + tx.first[size_t(ox)] + k) * c;
        float* dst = out.data() + (oy * out_w + ox) * c;
        for (int64_t ch = 0; ch < c; ++ch) dst[ch] += wk * src[ch];
      }
  return out;
}

Image resize_image(const Image& in, int64_t out_h, int64_t out_w, ResizeFilter filter) {
  KD_CHECK(!in.empty(), "resize: empty image");
  std::vector<float> src(in.pixels.begin(), in.pixels.end());
  const std::vector<float> r = resize_hwc(src.data(), in.height, in.width, Image::channels, out_h, out_w, filter);
  Image out;
  out.height = int(out_h), out.width = int(out_w), out.label = in.label;
  out.pixels.resize(r.size());
  for (size_t i = 0; i < r.size(); ++i) out.pixels[i] = uint8_t(std::min(255.0f, std::max(0.0f, std::nearbyint(r[i]))));
  return out;
}

EvalResize resize_for_eval(const Image& in, int64_t res, double crop_fraction, ResizeFilter filter) {
  KD_CHECK(res > 0 && crop_fraction > 0 && crop_fraction <= 1, "resize_for_eval: resolution ", res, ", crop fraction ",
           crop_fraction);
  const int64_t short_side = int64_t(std::floor(double(res) / crop_fraction));
  const bool tall = in.height > in.width;
  const int64_t s = tall ? in.width : in.height, l = tall ? in.height : in.width;
  const int64_t long_side = std::max<int64_t>(short_side, int64_t(double(short_side) * double(l) / double(s)));
  const int64_t out_h = tall ? long_side : short_side, out_w = tall ? short_side : long_side;
  EvalResize r;
  r.image = resize_image(in, out_h, out_w, filter);
  r.top = int32_t(std::nearbyint(double(out_h - res) / 2.0));  // Python round(): ties to even
  r.left = int32_t(std::nearbyint(double(out_w - res) / 2.0));
  return r;
}

}  // namespace kd
